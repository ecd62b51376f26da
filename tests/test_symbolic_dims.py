"""Dims known only at run time (`f32[batch, 4, n]`): what `kdsl check` accepts compiles, trains and gives Keras's
losses at every size; what cannot compile is refused at its line; what cannot fit in memory is said before it
is allocated."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdsl import cli, memory
from kdsl.errors import KdslArgumentError, KdslError, KdslShapeError
from kdsl.footprint import Footprint, footprint
from kdsl.lang import load
from kdsl.model import Model

# every loss on outputs whose last dim is symbolic; one model, so its kernels compile once
OUTPUTS = """
model M(x: f32[batch, 4, n]) -> (twice, probs, flat, smoothed, gates) {
    twice    = add(x, x)
    probs    = activation(x, softmax)
    flat     = x |> flatten |> dropout(0.5)
    smoothed = activation(x, softmax)
    gates    = activation(x, sigmoid)
}
train M {
    loss twice    = mse
    loss probs    = sparse_categorical_crossentropy
    loss flat     = mae
    loss smoothed = categorical_crossentropy(label_smoothing=0.2)
    loss gates    = binary_crossentropy
}
"""


def _log_softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _keras_losses(x, t):
    """Each output's loss as Keras defines it, written out in float64: a mean over the last axis, then over the
    samples (and the 4 rows of each)."""
    x = x.astype(np.float64)
    n = x.shape[-1]
    log_p = _log_softmax(x)
    smoothed = t["smoothed"] * 0.8 + 0.2 / n
    p = np.clip(1 / (1 + np.exp(-x)), 1e-7, 1 - 1e-7)
    bce = -(t["gates"] * np.log(p) + (1 - t["gates"]) * np.log(1 - p))
    return {
        "twice": np.mean((2 * x - t["twice"]) ** 2),
        "probs": np.mean(-np.take_along_axis(log_p, t["probs"][..., None], axis=-1)),
        "flat": np.mean(np.abs(x.reshape(len(x), -1) - t["flat"])),
        "smoothed": np.mean(-(smoothed * log_p).sum(axis=-1)),
        "gates": np.mean(bce),
    }


@pytest.fixture(scope="module")
def model():
    model = Model.from_graph(load(OUTPUTS).model("M"))
    model.compile(seed=0)
    return model


@pytest.mark.parametrize("n", [3, 7])
def test_losses_over_a_symbolic_last_dim_are_keras_at_every_size(model, n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=(6, 4, n)).astype(np.float32)
    one_hot = np.eye(n, dtype=np.float32)[rng.integers(0, n, (6, 4))]
    targets = {
        "twice": rng.normal(size=(6, 4, n)).astype(np.float32),
        "probs": rng.integers(0, n, (6, 4)).astype(np.int32),
        "flat": rng.normal(size=(6, 4 * n)).astype(np.float32),
        "smoothed": one_hot,
        "gates": rng.integers(0, 2, (6, 4, n)).astype(np.float32),
    }
    logs = model.evaluate(x, targets, batch_size=6, return_dict=True)
    expected = _keras_losses(x, targets)
    for name, value in expected.items():
        assert logs[f"{name}_loss"] == pytest.approx(value, rel=1e-5), name
    assert logs["loss"] == pytest.approx(sum(expected.values()), rel=1e-5)
    history = model.fit(x, targets, batch_size=3, epochs=1, verbose=0)  # the training step runs at this size too
    assert np.isfinite(history.history["loss"][0])


def test_class_ids_are_checked_against_a_symbolic_class_count(model):
    x = np.zeros((2, 4, 5), np.float32)
    targets = {
        "twice": x,
        "probs": np.full((2, 4), 5, np.int32),  # 5 classes: ids 0..4
        "flat": np.zeros((2, 20), np.float32),
        "smoothed": x,
        "gates": x,
    }
    with pytest.raises(KdslArgumentError, match=r"the output has 5 classes \(ids 0\.\.4\)"):
        model.evaluate(x, targets)


def test_concatenating_along_a_symbolic_dim_is_refused_at_its_line():
    text = "model C(x: f32[batch, n]) -> y {\n    y = concatenate(x, x)\n}\n"
    with pytest.raises(KdslShapeError) as caught:
        load(text, "c.kd")
    assert "needs fixed sizes there, got `n`" in caught.value.message
    assert (caught.value.span.line, caught.value.span.column) == (2, 9)


# --- memory ---------------------------------------------------------------------------------------------------

DENSE = """
model D(x: f32[batch, 100]) -> y {
    y = dense(x, 50, activation=softmax)
}
train D { loss = sparse_categorical_crossentropy  optimizer = adam()  batch_size = 10 }
"""


def test_the_footprint_counts_weights_gradients_slots_and_the_batch():
    found = footprint(load(DENSE).model("D"))
    params = 100 * 50 + 50
    assert found.weights == 4 * params
    assert found.training == 4 * params * 2  # Adam's m and v
    # the weights' gradients, and the input, logits and probabilities of a batch of 10, alive together
    assert found.buffers >= 4 * params + 4 * 10 * (100 + 50 + 50)
    assert found.batch == 10
    larger = footprint(load(DENSE).model("D"), batch=1000)
    assert larger.buffers - found.buffers >= 4 * 990 * (100 + 50 + 50)


def test_warnings_say_what_does_not_fit_and_what_to_do():
    found = Footprint(weights=4000, training=8000, buffers=50_000, batch=64, unsized=("time",))
    assert found.warning(None) is None and found.warning(10**6) is None
    batch = found.warning(20_000)
    assert "a batch of 64 needs about 60.55 KB (and more for each `time`)" in batch and "smaller batch_size" in batch
    assert found.warning(3000).startswith("its weights need 3.91 KB, more than this machine's 2.93 KB of memory")
    assert found.warning(10_000).startswith("its weights and optimizer slots need 11.72 KB")


def test_check_and_summary_warn_when_the_model_cannot_fit(tmp_path, monkeypatch, capsys):
    path = tmp_path / "d.kd"
    path.write_text(DENSE)
    monkeypatch.setattr(cli, "machine_memory", lambda: 10_000)
    assert cli.main(["check", str(path)]) == 0  # a warning, not an error: another machine may hold it
    assert f"{path}:2: warning: model `D`: its weights need 19.73 KB" in capsys.readouterr().err
    assert cli.main(["summary", str(path)]) == 0
    assert "warning: model `D`" in capsys.readouterr().err
    monkeypatch.setattr(cli, "machine_memory", lambda: 10**12)
    assert cli.main(["check", str(path)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_weights_that_cannot_fit_are_refused_before_they_are_allocated(monkeypatch):
    monkeypatch.setattr(memory, "machine_memory", lambda: 10_000)
    with pytest.raises(KdslError, match=r"model `D`'s weights need 19.73 KB, more than this machine's 9.77 KB"):
        Model.from_graph(load(DENSE).model("D")).compile()


def test_a_batch_whose_buffers_cannot_fit_is_refused_before_they_are_allocated(model, monkeypatch):
    import os

    from kdsl.backends.cpu.support import entry

    real = os.sysconf
    monkeypatch.setattr(entry.os, "sysconf", lambda name: 1 if name == "SC_PHYS_PAGES" else real(name))
    with pytest.raises(MemoryError, match=r"a call with batch=4093, n=3 needs .* GB of buffers"):
        model.predict(np.zeros((4093, 4, 3), np.float32), batch_size=4093)


# --- whatever check accepts, trains ----------------------------------------------------------------------------

INPUTS = {"f32[batch, n]": (5, 7), "f32[batch, 4, n]": (5, 6), "f32[batch, n, 4]": (5, 6), "f32[batch, n, 3]": (2, 4)}
CHAINS = [
    "activation(x, softmax)", "activation(x, relu)", "flatten(x)", "dropout(x, 0.5)", "x |> flatten |> dropout(0.5)",
    "add(x, x)", "multiply(x, x)", "concatenate(x, x)", "concatenate(x, x, axis=1)", "batch_normalization(x)",
    "repeat_vector(x, 3)", "lstm(x, 4, return_sequences=true)", "time_distributed(x, dense(2))",
    "bidirectional(x, gru(3, return_sequences=true))", "x |> flatten |> activation(softmax)", "simple_rnn(x, 4)",
]  # fmt: skip
LOSSES = ["mse", "mae", "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"]


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # a crossentropy of zeros, as in Keras
@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(INPUTS)), st.sampled_from(CHAINS), st.sampled_from(LOSSES))
def test_what_check_accepts_trains_at_every_size(input_type, chain, loss):
    text = f"model M(x: {input_type}) -> y {{\n    y = {chain}\n}}\ntrain M {{ loss = {loss} }}\n"
    try:
        graph = load(text, "m.kd").model("M")
    except KdslError:
        return  # refused at a line: fine
    model = Model.from_graph(graph)
    model.compile(seed=0, target="numpy")  # the compiler's stages and the IR's interpreter: no kernels to build
    for n in INPUTS[input_type]:
        shape = [3 if d == "batch" else n if d == "n" else int(d) for d in input_type[4:-1].split(", ")]
        x = np.random.default_rng(n).random(shape, dtype=np.float32)
        y = model.predict(x, verbose=0)
        assert y.shape[0] == 3
        t = np.zeros(y.shape[:-1], np.int32) if loss.startswith("sparse") else np.full(y.shape, 0.5, np.float32)
        history = model.fit(x, t, batch_size=3, verbose=0)  # a crossentropy of zeros may be NaN, as in Keras
        assert len(history.history["loss"]) == 1
