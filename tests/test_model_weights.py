"""The model owns its weights, as a Keras model does: they exist once the model is built, `get_weights`,
`set_weights`, `predict`, `predict_on_batch`, `model(x)` and the weights files work without `compile()`, and
`compile()` keeps them."""

from __future__ import annotations

import numpy as np
import pytest

import kdsl
from kdsl import layers as L
from kdsl.errors import KdslUnsupportedError


def _mlp():
    x = kdsl.Input(shape=(4,))
    return kdsl.Model(x, L.Dense(3, activation="softmax")(L.Dense(5, activation="relu")(x)))


def _reference(weights, x):
    """The same MLP in NumPy: relu(x·W1 + b1)·W2 + b2, softmax."""
    w1, b1, w2, b2 = (w.astype(np.float64) for w in weights)
    logits = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


X = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)


def test_a_model_never_compiled_predicts_with_weights_set_from_another():
    source, model = _mlp(), _mlp()
    weights = source.get_weights()
    assert [w.shape for w in weights] == [(4, 5), (5,), (5, 3), (3,)]
    model.set_weights(weights)
    expected = _reference(weights, X)
    np.testing.assert_allclose(model.predict(X, batch_size=4), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict_on_batch(X), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model(X), expected, rtol=1e-5, atol=1e-6)


def test_predict_compiles_the_forward_pass_once_and_no_training_step():
    model = _mlp()
    model.predict(X)
    inference = model._runnable()
    model.predict(X[:2])
    assert model._runnable() is inference and inference.training is None


def test_compile_keeps_the_weights_and_a_second_compile_keeps_the_trained_ones():
    model = _mlp()
    before = model.get_weights()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    model.fit(X, np.arange(6) % 3, epochs=2, verbose=0)
    trained = model.get_weights()
    assert not np.array_equal(trained[0], before[0])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    for old, new in zip(trained, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_allclose(model.predict(X), _reference(trained, X), rtol=1e-5, atol=1e-6)


def test_weights_files_round_trip_without_compile(tmp_path):
    source, model = _mlp(), _mlp()
    source.save_weights(tmp_path / "w.npz")
    model.load_weights(tmp_path / "w.npz")
    for expected, actual in zip(source.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(expected, actual)


def test_calling_a_model_on_tensors_is_refused():
    model = _mlp()
    with pytest.raises(KdslUnsupportedError, match="nesting"):
        model(kdsl.Input(shape=(4,)))
