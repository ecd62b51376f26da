"""`compile(weighted_metrics=...)` and the rest of Keras's `compile` signature: weighted metrics count each sample by
its weight, plain ones count every sample alike, and both are logged under the names Keras gives them. The
references are Keras's definitions written out: a weighted mean metric is Σ value·weight / Σ weight."""

from __future__ import annotations

import numpy as np
import pytest

import kdsl
from kdsl.errors import KdslArgumentError, KdslUnsupportedError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 6)).astype(np.float32)
Y = RNG.integers(0, 3, 40).astype(np.int32)
W = RNG.uniform(0.0, 3.0, 40).astype(np.float32)


def classifier(**compile_args) -> kdsl.Model:
    x = kdsl.Input(shape=(6,))
    model = kdsl.Model(x, kdsl.layers.Dense(3, activation="softmax")(x))
    model.compile(target="numpy", **{"optimizer": kdsl.optimizers.SGD(1e-9), "loss": "sparse_categorical_crossentropy",
                                     **compile_args})  # fmt: skip
    return model


def correct(model: kdsl.Model) -> np.ndarray:
    return (np.argmax(model.predict(X, verbose=0), axis=-1) == Y).astype(np.float64)


def test_a_weighted_metric_counts_samples_by_weight_and_a_plain_one_does_not():
    model = classifier(metrics=["accuracy"], weighted_metrics=["accuracy"])
    logs = model.evaluate(X, Y, sample_weight=W, batch_size=16, return_dict=True, verbose=0)
    hits = correct(model)
    assert list(logs) == ["loss", "accuracy", "weighted_accuracy"]
    assert logs["accuracy"] == pytest.approx(hits.mean())
    assert logs["weighted_accuracy"] == pytest.approx((hits * W).sum() / W.sum())
    assert logs["weighted_accuracy"] != pytest.approx(logs["accuracy"])  # the weights matter on this data


def test_class_weights_weigh_weighted_metrics_in_fit():
    model = classifier(weighted_metrics=["accuracy"])
    table = {0: 0.5, 1: 2.0, 2: 4.0}
    history = model.fit(X, Y, class_weight=table, batch_size=8, epochs=1, verbose=0)  # the weights barely move
    weights = np.array([table[int(c)] for c in Y])
    assert history.history["accuracy"][0] == pytest.approx((correct(model) * weights).sum() / weights.sum())


def test_names_as_keras_gives_them():
    model = classifier(metrics=["accuracy", "accuracy"], weighted_metrics=["accuracy", "sparse_categorical_accuracy"])
    logs = model.evaluate(X, Y, return_dict=True, verbose=0)
    assert list(logs) == ["loss", "accuracy", "accuracy_1", "weighted_accuracy", "sparse_categorical_accuracy"]
    assert logs["weighted_accuracy"] == pytest.approx(logs["accuracy"])  # no weights given: every sample counts one

    x = kdsl.Input(shape=(6,), name="x")
    a = kdsl.layers.Dense(3, activation="softmax", name="a")(x)
    b = kdsl.layers.Dense(1, activation="sigmoid", name="b")(x)
    model = kdsl.Model(x, [a, b])
    model.compile(loss=["sparse_categorical_crossentropy", "binary_crossentropy"], target="numpy",
                  metrics={"a": ["accuracy"]}, weighted_metrics={"a": ["accuracy"], "b": ["accuracy"]})  # fmt: skip
    logs = model.evaluate(X, {"a": Y, "b": (Y > 0).astype(np.float32)}, return_dict=True, verbose=0)
    assert list(logs)[3:] == ["a_accuracy", "a_weighted_accuracy", "b_accuracy"]


def test_compile_takes_keras_arguments_in_keras_order():
    model = classifier()
    model.compile("rmsprop", "sparse_categorical_crossentropy", None, ["accuracy"], target="numpy")
    assert list(model.evaluate(X, Y, return_dict=True, verbose=0)) == ["loss", "accuracy"]
    model.compile("sgd", "sparse_categorical_crossentropy", steps_per_execution=4, jit_compile=True, target="numpy")
    with pytest.raises(KdslUnsupportedError, match="run_eagerly"):
        model.compile("sgd", "sparse_categorical_crossentropy", run_eagerly=True)
    with pytest.raises(KdslUnsupportedError, match="jit_compile"):
        model.compile("sgd", "sparse_categorical_crossentropy", jit_compile=False)
    with pytest.raises(KdslArgumentError, match="steps_per_execution"):
        model.compile("sgd", "sparse_categorical_crossentropy", steps_per_execution=0)
