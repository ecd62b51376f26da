"""Losses and metrics of a masked output weigh each timestep by the mask, as Keras's do.

Keras (keras/src/losses/loss.py, `apply_mask`; keras/src/metrics/reduction_metrics.py) averages a
per-timestep loss over the unmasked timesteps only (0 when none is), combined with sample weights,
and a metric over the unmasked timesteps. The references here are written out in NumPy from the
model's own predictions: the sum over valid timesteps divided by their count.
"""

from __future__ import annotations

import numpy as np
import pytest
from gradients import worst_gradient_error
from hypothesis import given, settings
from hypothesis import strategies as st

from kdsl.lang import load
from kdsl.model import Model
from kdsl.pipeline import compile_programs

STEPS, CLASSES = 5, 3
TEXT = f"""model M(ids: i32[batch, {STEPS}]) -> probs {{
    probs = ids |> embedding(7, 3, mask_zero=true) |> lstm(4, return_sequences=true)
                |> dense({CLASSES}, activation=softmax)
}}
train M {{ loss = sparse_categorical_crossentropy
          optimizer = sgd(learning_rate=0.1)
          metrics = [accuracy] }}"""


@st.composite
def padded_ids(draw):
    """Token ids padded with 0 on the right, on the left, at random, with some rows all padding."""
    batch = draw(st.integers(1, 5))
    padding = draw(st.sampled_from(["right", "left", "random"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    ids = rng.integers(1, 7, (batch, STEPS)).astype(np.int32)
    for row in range(batch):
        length = draw(st.integers(0, STEPS))
        if padding == "right":
            ids[row, length:] = 0
        elif padding == "left":
            ids[row, : STEPS - length] = 0
        else:
            ids[row, rng.random(STEPS) < 0.4] = 0
    labels = rng.integers(0, CLASSES, (batch, STEPS)).astype(np.int32)
    return ids, labels


def masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Σ values over the valid timesteps / their count; 0 when none is valid."""
    valid = mask.sum()
    return float((values * mask).sum() / valid) if valid else 0.0


@pytest.fixture(scope="module", params=["numpy", "cpu"])
def model(request):
    model = Model.from_graph(load(TEXT, "m.kd").models["M"])
    model.compile(target=request.param, seed=3)
    return model


def _references(model, ids, labels, weights=None):
    probs = model.predict(ids, batch_size=len(ids)).astype(np.float64)
    picked = np.take_along_axis(probs, labels[..., None], axis=-1)[..., 0]
    mask = (ids != 0).astype(np.float64)
    weights = np.ones(ids.shape) if weights is None else np.broadcast_to(weights.reshape(len(ids), -1), ids.shape)
    loss = masked_mean(-np.log(picked) * weights, mask)
    accuracy = masked_mean((probs.argmax(-1) == labels).astype(np.float64), mask)
    return loss, accuracy


@settings(max_examples=30, deadline=None)
@given(batch=padded_ids())
def test_evaluate_averages_loss_and_accuracy_over_unmasked_steps(model, batch):
    ids, labels = batch
    loss, accuracy = _references(model, ids, labels)
    logs = model.evaluate(ids, labels, batch_size=len(ids), return_dict=True)
    assert logs["loss"] == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert logs["accuracy"] == pytest.approx(accuracy, rel=1e-6, abs=1e-6)


@settings(max_examples=20, deadline=None)
@given(batch=padded_ids(), per_sample=st.booleans(), seed=st.integers(0, 2**16))
def test_training_loss_and_accuracy_combine_mask_and_sample_weight(model, batch, per_sample, seed):
    """A training step's loss (before its update) and the accuracy fit logs, with sample weights per sample (which
    Keras expands over the timesteps) or per timestep."""
    ids, labels = batch
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.5, 2.0, (len(ids),) if per_sample else ids.shape).astype(np.float32)
    loss, accuracy = _references(model, ids, labels, weights)
    before = model.get_weights()
    history = model.fit(ids, labels, batch_size=len(ids), epochs=1, shuffle=False, verbose=0, sample_weight=weights)
    model.set_weights(before)
    assert history.history["loss"][0] == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert history.history["accuracy"][0] == pytest.approx(accuracy, rel=1e-6, abs=1e-6)


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_masked_loss_gradient_matches_finite_differences(batch, seed):
    training = compile_programs(load(TEXT, "m.kd").models["M"], target="numpy").training
    assert worst_gradient_error(training, np.random.default_rng(seed), batch) < 1e-4
