"""The model owns its weights, as a Keras model does: they exist once the model is built, `get_weights`,
`set_weights`, `predict`, `predict_on_batch`, `model(x)` and the weights files work without `compile()`, and
`compile()` keeps them."""

from __future__ import annotations

import numpy as np
import pytest

import kdsl
from kdsl import layers as L
from kdsl.errors import KdslArgumentError


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


def test_layers_are_listed_as_keras_lists_them_and_carry_the_models_weights():
    """The functional model of test_keras_layer_order's `headline`: Keras 3 lists `input_layer, embedding, lstm,
    input_layer_1, concatenate, dense_1, dense_2, dense` (InputLayers where their depth puts them)."""
    words, extra = kdsl.Input(shape=(7,), dtype="int32"), kdsl.Input(shape=(5,))
    code = L.LSTM(6)(L.Embedding(20, 8)(words))
    aux = L.Dense(1)(code)
    model = kdsl.Model([words, extra], [L.Dense(1)(L.Dense(4)(L.concatenate([code, extra]))), aux])
    names = [layer.name for layer in model.layers]
    assert names == ["input_layer", "embedding", "lstm", "input_layer_1", "concatenate", "dense_1", "dense_2", "dense"]
    lstm = model.get_layer("lstm")
    assert repr(lstm) == "<LSTM name=lstm, built=True>" and model.get_layer(index=2) is not None
    assert lstm.kernel.shape == (8, 24) and [w.shape for w in lstm.get_weights()] == [(8, 24), (6, 24), (24,)]
    lstm.set_weights([np.ones((8, 24)), np.zeros((6, 24)), np.full(24, 0.5)])
    np.testing.assert_array_equal(model.get_weights()[1], np.ones((8, 24), np.float32))
    assert [t.shape for t in model.inputs] == [(None, 7), (None, 5)] and len(model.outputs) == 2
    with pytest.raises(KdslArgumentError, match="did you mean `lstm`"):
        model.get_layer("lsmt")


def test_a_layer_frozen_through_the_model_stays_at_the_next_compile():
    model = _mlp()
    model.get_layer(index=1).trainable = False
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    before = model.get_weights()
    model.fit(X, np.arange(6) % 3, verbose=0)
    assert [np.array_equal(a, b) for a, b in zip(before, model.get_weights())] == [True, True, False, False]
