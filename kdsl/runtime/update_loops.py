"""The update rules (`kdsl.runtime.update_rules`) compiled into one loop over the elements of every weight.

Kept apart from `kdsl.runtime.optimizers`, which describes optimizers, so that reading a model,
checking it or summarizing it does not import Numba.
"""

import numba
import numpy as np

import kdsl
from kdsl.backends.cpu.support.cache_keys import key_by_package
from kdsl.runtime import update_rules as rules

key_by_package(kdsl.__file__)

# The rules of `kdsl.runtime.update_rules`, each in a compiled loop over the elements of every weight
# (tuples of flat arrays): one pass and no temporaries (the NumPy expressions they replaced took a
# sixth of W2's epoch). Each loop gets the optimizer's flags as constants, so that LLVM vectorizes
# it: a flag tested inside the loop, or a division that may raise (the "python" error model), kept
# it scalar.
_sgd_at, _adam_at, _rmsprop_at, _adagrad_at = (
    numba.njit(inline="always", error_model="numpy")(rule)
    for rule in (rules.sgd, rules.adam, rules.rmsprop, rules.adagrad)
)
_loop = numba.njit(inline="always", error_model="numpy")


@_loop
def _sgd_loop(w, g, m, lr, momentum, nesterov):
    for i in range(w.size):
        _sgd_at(i, w, g[i], m, lr, momentum, nesterov)


@numba.njit(cache=True, error_model="numpy")
def _sgd(ws, gs, ms, lr, momentum, nesterov):
    for k in range(len(ws)):
        if momentum == 0:
            _sgd_loop(ws[k], gs[k], ms[k], lr, np.float32(0), False)
        elif nesterov:
            _sgd_loop(ws[k], gs[k], ms[k], lr, momentum, True)
        else:
            _sgd_loop(ws[k], gs[k], ms[k], lr, momentum, False)


@_loop
def _adam_loop(w, g, m, v, v_hat, alpha, one_minus_b1, one_minus_b2, epsilon, amsgrad):
    for i in range(w.size):
        _adam_at(i, w, g[i], m, v, v_hat, alpha, one_minus_b1, one_minus_b2, epsilon, amsgrad)


@numba.njit(cache=True, error_model="numpy")
def _adam(ws, gs, ms, vs, v_hats, alpha, one_minus_b1, one_minus_b2, epsilon, amsgrad):
    for k in range(len(ws)):
        w, g, m, v, v_hat = ws[k], gs[k], ms[k], vs[k], v_hats[k]
        if amsgrad:
            _adam_loop(w, g, m, v, v_hat, alpha, one_minus_b1, one_minus_b2, epsilon, True)
        else:
            _adam_loop(w, g, m, v, v_hat, alpha, one_minus_b1, one_minus_b2, epsilon, False)


@_loop
def _rmsprop_loop(w, g, velocity, momentum_slot, average, lr, rho, one_minus_rho, epsilon, momentum, centered):
    for i in range(w.size):
        _rmsprop_at(i, w, g[i], velocity, momentum_slot, average, lr, rho, one_minus_rho, epsilon, momentum,
                    centered)  # fmt: skip


@numba.njit(cache=True, error_model="numpy")
def _rmsprop(ws, gs, velocities, momenta, averages, lr, rho, one_minus_rho, epsilon, momentum, centered):
    for k in range(len(ws)):
        w, g, velocity, momentum_slot, average = ws[k], gs[k], velocities[k], momenta[k], averages[k]
        if momentum == 0 and centered:
            _rmsprop_loop(w, g, velocity, momentum_slot, average, lr, rho, one_minus_rho, epsilon, np.float32(0), True)
        elif momentum == 0:
            _rmsprop_loop(w, g, velocity, momentum_slot, average, lr, rho, one_minus_rho, epsilon, np.float32(0), False)
        elif centered:
            _rmsprop_loop(w, g, velocity, momentum_slot, average, lr, rho, one_minus_rho, epsilon, momentum, True)
        else:
            _rmsprop_loop(w, g, velocity, momentum_slot, average, lr, rho, one_minus_rho, epsilon, momentum, False)


@numba.njit(cache=True, error_model="numpy")
def _adagrad(ws, gs, accumulators, lr, epsilon):
    for k in range(len(ws)):
        w, g, accumulator = ws[k], gs[k], accumulators[k]
        for i in range(w.size):
            _adagrad_at(i, w, g[i], accumulator, lr, epsilon)


HOST_LOOPS = {"sgd": _sgd, "adam": _adam, "rmsprop": _rmsprop, "adagrad": _adagrad}
