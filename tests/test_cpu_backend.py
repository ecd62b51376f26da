"""The Numba CPU backend against the NumPy backend, on three models that together use every layer.

Compiling a model's kernels takes seconds, so each model is compiled once per session (and
cached on disk across sessions); the tests then vary batch size and sequence length, which
the generated kernels take at run time, so hypothesis draws them (batch 1 and sequence length 1
included; batches smaller and larger than the number of threads, so parallel kernels see
chunks of one row and of several).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gradients import concrete
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdsl.lang import load, load_file
from kdsl.pipeline import compile_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

MASKED = """
model Masked(ids: i32[batch, time], extra: f32[batch, 3]) -> (label, score) {
    e = embedding(ids, 7, 4, mask_zero=true)
    layer both = bidirectional(simple_rnn(units=3, return_sequences=true), merge_mode=concat)
    s = both(e) |> dropout(0.2)
    last, h, c = lstm(s, units=4, go_backwards=true, return_state=true, dropout=0.2, recurrent_dropout=0.3)
    r = simple_rnn(e, units=2, activation=relu)
    g = gru(e, units=2, initial_state=[r], reset_after=false)
    joined = concatenate(last, c, g, extra) |> batch_norm
    label = dense(joined, 3, activation=softmax)
    score = dense(joined, 1, activation=sigmoid)
}
train Masked {
    loss label = sparse_categorical_crossentropy, weight 1.0
    loss score = binary_crossentropy, weight 0.5
    optimizer = sgd()
}
"""

DENSE = """
model Dense(x: f32[batch, 3, 4]) -> y {
    h = x |> time_distributed(dense(5, activation=gelu)) |> flatten |> dense(6, activation=elu)
    h = add(h, multiply(h, h)) |> dense(4, activation=softsign, kernel_regularizer=l2(0.01))
    h = repeat_vector(h, 2) |> reshape([8]) |> activation(selu)
    y = dense(h, 3, activation=softmax)
}
train Dense {
    loss = categorical_crossentropy(label_smoothing=0.1)
    optimizer = sgd()
}
"""


def _pair(graph, parallel):
    reference = compile_model(graph, target="numpy")
    compiled = compile_model(graph, target="cpu", parallel=parallel)
    compiled.weights = [w.copy() for w in reference.weights]
    for model in (reference, compiled):  # non-trivial moving statistics, the same in both
        for i, name in enumerate(model.param_names):
            if name.endswith("moving_variance"):
                model.weights[i][...] = np.linspace(0.5, 2.0, model.weights[i].size)
    return reference, compiled


@pytest.fixture(scope="module", params=["mnist_lstm", "masked", "dense"])
def pair(request):
    """The example runs multi-threaded (time loops split by batch rows); the others on one thread,
    which compiles several times faster."""
    if request.param == "mnist_lstm":
        return _pair(load_file(EXAMPLES / "mnist_lstm.kd").models["MnistLSTM"], parallel=True)
    graph = next(iter(load(MASKED if request.param == "masked" else DENSE, "t.kd").models.values()))
    return _pair(graph, parallel=False)


def _arrays(model, rng, batch, steps):
    inputs = []
    for value in model.graph.inputs:
        shape = [steps if d == "time" else d for d in concrete(value.type.dims, batch)]
        if value.type.dtype == "i32":
            ids = rng.integers(1, 7, shape).astype(np.int32)
            ids[0, max(1, steps // 2) :] = 0  # right padding
            if batch > 2:
                ids[2, :] = 0  # a fully masked row
            inputs.append(ids)
        else:
            inputs.append(rng.standard_normal(shape).astype(np.float32))
    targets = []
    for var, output in zip(model.training.targets, model.graph.outputs):
        shape = concrete(var.shape, batch)
        if var.type.dtype == "i32":
            targets.append(rng.integers(0, output.type.dims[-1], shape).astype(np.int32))
        else:
            targets.append(rng.uniform(0, 1, shape).astype(np.float32))
    return inputs, targets


def assert_close(expected, actual, rtol=1e-5):
    """Equal to `rtol` of the array's own scale: summation order differs between BLAS and NumPy.

    The absolute floor, 1e-6, is float32 rounding of values of order one: a gradient near zero
    (BatchNormalization's cancel out) can differ by that much whatever its own scale.
    """
    expected, actual = np.asarray(expected), np.asarray(actual)
    assert expected.shape == actual.shape
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-6)
    assert float(np.abs(expected - actual).max(initial=0.0)) <= rtol * scale + 1e-6


SIZES = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SIZES
@given(batch=st.integers(1, 6), steps=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_forward_matches_numpy(pair, batch, steps, seed):
    reference, compiled = pair
    inputs, _ = _arrays(reference, np.random.default_rng(seed), batch, steps)
    for expected, actual in zip(reference.forward(*inputs), compiled.forward(*inputs), strict=True):
        assert_close(expected, actual)


@SIZES
@given(batch=st.integers(1, 6), steps=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_train_step_matches_numpy(pair, batch, steps, seed):
    reference, compiled = pair
    inputs, targets = _arrays(reference, np.random.default_rng(seed), batch, steps)
    reference.rng, compiled.rng = np.random.default_rng(7), np.random.default_rng(7)  # the same dropout masks
    before = [w.copy() for w in reference.weights]
    compiled.weights = [w.copy() for w in before]
    loss_reference = reference.train_step(inputs, targets)
    loss_compiled = compiled.train_step(inputs, targets)
    assert np.isfinite(loss_reference)
    assert loss_compiled == pytest.approx(loss_reference, rel=1e-5)
    for expected, actual in zip(reference.grads, compiled.grads, strict=True):
        assert_close(expected, actual)
    for expected, actual in zip(reference.weights, compiled.weights, strict=True):  # moving statistics
        assert_close(expected, actual)
    assert any(np.abs(g).max() > 0 for g in compiled.grads)


def test_arena_is_reused_across_steps(pair):
    """Buffers are planned once per batch size: a second step allocates no new arena."""
    _, compiled = pair
    inputs, targets = _arrays(compiled, np.random.default_rng(0), 2, 2)
    compiled.train_step(inputs, targets)
    arenas = dict(compiled.runner.module.train_step.arenas)
    compiled.train_step(inputs, targets)
    assert compiled.runner.module.train_step.arenas.keys() == arenas.keys()
    assert all(compiled.runner.module.train_step.arenas[k][0] is arenas[k][0] for k in arenas)
