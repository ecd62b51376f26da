"""Serving from threads: a model predicting in many threads at once gives each call its own numbers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import kdsl
from kdsl import layers as L


def _model(kind: str):
    if kind == "dense":
        x = kdsl.Input(shape=(16,))
        return kdsl.Model(x, L.Dense(4, activation="softmax")(L.Dense(32, activation="relu")(x)))
    x = kdsl.Input(shape=(12, 5))
    return kdsl.Model(x, L.Dense(3)(L.LSTM(16)(x)))


@pytest.mark.parametrize("kind", ["dense", "lstm"])
def test_many_threads_predicting_get_the_single_thread_results(kind):
    model = _model(kind)
    rng = np.random.default_rng(0)
    shape = (16,) if kind == "dense" else (12, 5)
    batches = [rng.normal(size=(int(rng.integers(1, 9)), *shape)).astype(np.float32) for _ in range(64)]
    expected = [model.predict_on_batch(b) for b in batches]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(model.predict_on_batch, batches * 4))
    for got, want in zip(results, expected * 4, strict=True):
        np.testing.assert_array_equal(got, want)
