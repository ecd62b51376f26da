"""Recurrent layers over one timestep: the cell inlined, the zero initial state folded (`kdsl.passes.single_steps`).

The outputs are checked against the cells written out in NumPy (Keras's equations, from a
zero state), the gradients against the NumPy backend, and the folding by what is left in
the program: no scan, and no product with the recurrent kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_cpu_backend import assert_close

from kdsl.lang import load
from kdsl.pipeline import compile_model

UNITS, FEATURES, BATCH = 6, 5, 3


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _gru(x, w):
    kernel, _, bias = w["kernel"], w["recurrent_kernel"], w["bias"]
    xz, xr, xh = np.split(x @ kernel + bias[0], 3, axis=-1)
    rz, rr, rh = np.split(np.broadcast_to(bias[1], (len(x), 3 * UNITS)), 3, axis=-1)  # h·U + b with h = 0
    z, r = _sigmoid(xz + rz), _sigmoid(xr + rr)
    return (1 - z) * np.tanh(xh + r * rh)


def _lstm(x, w):
    i, _forget, g, o = np.split(x @ w["kernel"] + w["bias"], 4, axis=-1)
    return _sigmoid(o) * np.tanh(_sigmoid(i) * np.tanh(g))


def _simple_rnn(x, w):
    return np.tanh(x @ w["kernel"] + w["bias"])


CELLS = {"gru": _gru, "lstm": _lstm, "simple_rnn": _simple_rnn}


def _model(layer: str):
    text = f"""
model One(x: f32[batch, 1, {FEATURES}]) -> h {{
    h = {layer}(x, {UNITS})
}}
train One {{ loss = mean_squared_error }}
"""
    return load(text, "one.kd").models["One"]


@pytest.mark.parametrize("layer", CELLS)
def test_one_step_is_the_cell_from_a_zero_state(layer):
    model = compile_model(_model(layer), target="cpu")
    weights = {name.split("/")[-1]: w for name, w in zip(model.param_names, model.weights)}
    for program in (model.inference.program, model.training.program):
        assert "scan" not in [e.op.name for e in program.eqns]
        assert not any(e.op.name == "matmul" and "recurrent_kernel" in e.inputs[1].name for e in program.eqns)
    x = np.random.default_rng(0).standard_normal((BATCH, 1, FEATURES)).astype(np.float32)
    (h,) = model.forward(x)
    assert_close(CELLS[layer](x[:, 0].astype(np.float64), weights), h)


@pytest.mark.parametrize("layer", ["gru", "lstm"])
def test_one_step_gradients_match_numpy(layer):
    reference = compile_model(_model(layer), target="numpy")
    compiled = compile_model(_model(layer), target="cpu")
    compiled.weights = [w.copy() for w in reference.weights]
    rng = np.random.default_rng(1)
    x = rng.standard_normal((BATCH, 1, FEATURES)).astype(np.float32)
    y = rng.standard_normal((BATCH, UNITS)).astype(np.float32)
    assert compiled.train_step([x], [y]) == pytest.approx(reference.train_step([x], [y]), rel=1e-5)
    for name, expected, actual in zip(reference.param_names, reference.grads, compiled.grads, strict=True):
        assert_close(expected, actual)
        if name.endswith("recurrent_kernel"):  # hᵀ·dz with h = 0
            assert not actual.any()
