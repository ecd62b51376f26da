"""Keras 3's optimizer update rules for one element, in float32: one definition for every target.

Each rule updates element `i` of a weight and of the slots it keeps (momentum, Adam's moments, ...)
from that element's gradient, in place, with the float32 operations in Keras's order. A slot the
rule does not keep (SGD's momentum when `momentum` is 0) may be any array: it is never read.
Plain Python on arrays and scalars, compiled by the host optimizers (`kdsl.runtime.optimizers`)
with `numba.njit` and by the CUDA target (`kdsl.backends.cuda.optimizer`) as device functions.
"""

import math


def sgd(i, w, grad, m, lr, momentum, nesterov):
    if momentum == 0:
        w[i] = w[i] - lr * grad
        return
    m[i] = m[i] * momentum
    m[i] = m[i] - lr * grad
    if nesterov:
        w[i] = w[i] + (momentum * m[i] - lr * grad)
    else:
        w[i] = w[i] + m[i]


def adam(i, w, grad, m, v, v_hat, alpha, one_minus_b1, one_minus_b2, epsilon, amsgrad):
    """`alpha` is the learning rate with the bias corrections of step t: lr·sqrt(1 - b2^t) / (1 - b1^t)."""
    m[i] = m[i] + (grad - m[i]) * one_minus_b1
    v[i] = v[i] + (grad * grad - v[i]) * one_minus_b2
    second = v[i]
    if amsgrad:
        v_hat[i] = max(v_hat[i], v[i])
        second = v_hat[i]
    w[i] = w[i] - alpha * m[i] / (math.sqrt(second) + epsilon)


def rmsprop(i, w, grad, velocity, momentum_slot, average, lr, rho, one_minus_rho, epsilon, momentum, centered):
    velocity[i] = velocity[i] * rho
    velocity[i] = velocity[i] + one_minus_rho * (grad * grad)
    denominator = velocity[i] + epsilon
    if centered:
        average[i] = average[i] * rho
        average[i] = average[i] + one_minus_rho * grad
        denominator = denominator - average[i] * average[i]
    increment = lr * grad / math.sqrt(denominator)
    if momentum != 0:
        momentum_slot[i] = momentum_slot[i] * momentum
        momentum_slot[i] = momentum_slot[i] + increment
        increment = momentum_slot[i]
    w[i] = w[i] - increment


def adagrad(i, w, grad, accumulator, lr, epsilon):
    accumulator[i] = accumulator[i] + grad * grad
    w[i] = w[i] - lr * grad / math.sqrt(accumulator[i] + epsilon)
