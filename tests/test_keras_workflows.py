"""The workflows of Keras's guides, run end to end with kdsl imported as `keras`: code a Keras user writes,
with only its import changed."""

from __future__ import annotations

import numpy as np
import pytest

import kdsl as keras
from kdsl import layers


def _news(seed: int = 0):
    """The functional-API guide's two-input, two-output model, small: a headline's words and extra features
    predict `priority` and `department`."""
    words = keras.Input(shape=(6,), dtype="int32", name="title")
    tags = keras.Input(shape=(4,), name="tags")
    code = layers.LSTM(8)(layers.Embedding(30, 6)(words))
    joined = layers.concatenate([code, tags])
    priority = layers.Dense(1, activation="sigmoid", name="priority")(joined)
    department = layers.Dense(3, activation="softmax", name="department")(joined)
    model = keras.Model(inputs=[words, tags], outputs=[priority, department])
    rng = np.random.default_rng(seed)
    data = {"title": rng.integers(1, 30, (32, 6)).astype(np.int32), "tags": rng.random((32, 4)).astype(np.float32)}
    targets = {"priority": rng.random((32, 1)).astype(np.float32), "department": rng.integers(0, 3, 32)}
    return model, data, targets


@pytest.mark.parametrize("as_dict", [False, True])
def test_functional_guide_trains_with_loss_weights_as_a_list_or_a_dict(as_dict):
    model, data, targets = _news()
    start = model.get_weights()
    if as_dict:
        model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                      loss={"priority": keras.losses.BinaryCrossentropy(from_logits=False),
                            "department": keras.losses.SparseCategoricalCrossentropy()},
                      loss_weights={"priority": 1.0, "department": 0.2}, target="numpy")  # fmt: skip
    else:
        model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                      loss=["binary_crossentropy", "sparse_categorical_crossentropy"],
                      loss_weights=[1.0, 0.2], target="numpy")  # fmt: skip
    history = model.fit(data, targets, epochs=2, batch_size=16, shuffle=False, verbose=0)
    logs = history.history
    np.testing.assert_allclose(logs["loss"], np.add(logs["priority_loss"], np.multiply(0.2, logs["department_loss"])),
                               rtol=1e-5)  # fmt: skip
    assert not np.array_equal(start[0], model.get_weights()[0])


def test_the_two_forms_of_loss_weights_train_alike():
    results = []
    for as_dict in (False, True):
        model, data, targets = _news()
        losses = ({"priority": "binary_crossentropy", "department": "sparse_categorical_crossentropy"} if as_dict
                  else ["binary_crossentropy", "sparse_categorical_crossentropy"])  # fmt: skip
        weights = {"priority": 1.0, "department": 0.2} if as_dict else [1.0, 0.2]
        model.compile(optimizer="rmsprop", loss=losses, loss_weights=weights, target="numpy")
        model.fit(data, targets, epochs=1, batch_size=16, shuffle=False, verbose=0)
        results.append(model.get_weights())
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


def test_callbacks_saving_and_loading_as_the_guides_use_them(tmp_path):
    model = keras.Sequential()
    model.add(layers.Dense(16, activation="relu", input_dim=8))
    model.add(layers.Dense(3, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(64, 8)).astype(np.float32), rng.integers(0, 3, 64)
    callbacks = [
        keras.callbacks.ModelCheckpoint(str(tmp_path / "best.kdz"), monitor="val_loss", save_best_only=True),
        keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch >= 2 else lr),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True),
    ]
    if _has("tensorboardX"):
        callbacks.append(keras.callbacks.TensorBoard(str(tmp_path / "logs")))
    history = model.fit(x, y, epochs=4, batch_size=16, validation_split=0.25, callbacks=callbacks, verbose=0)
    assert (tmp_path / "best.kdz").exists() and len(history.history["loss"]) >= 3
    assert model.optimizer.learning_rate == pytest.approx(0.01 * 0.5 ** (len(history.history["loss"]) - 2))

    model.save_weights(tmp_path / "w.npz")
    fresh = keras.Sequential([layers.Dense(16, activation="relu", input_dim=8), layers.Dense(3, activation="softmax")])
    fresh.load_weights(tmp_path / "w.npz")
    np.testing.assert_allclose(fresh.predict(x, verbose=0), model.predict(x), rtol=1e-6)

    model.save(tmp_path / "model.kdz")
    loaded = keras.models.load_model(tmp_path / "model.kdz")
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)
    loaded.fit(x, y, epochs=1, verbose=0)  # goes on training where it stopped


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
