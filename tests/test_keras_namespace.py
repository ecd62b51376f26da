"""Keras code runs with `import kdsl as keras`: the namespaces, objects and functional forms it uses."""

from __future__ import annotations

import numpy as np
import pytest

import kdsl as keras
from kdsl.errors import KdslArgumentError
from kdsl.layers import Add, Concatenate, Multiply


def test_functional_merge_forms_build_the_layers():
    a, b = keras.Input(shape=(3,)), keras.Input(shape=(3,))
    for function, cls in ((keras.layers.concatenate, Concatenate), (keras.layers.add, Add),
                          (keras.layers.multiply, Multiply)):  # fmt: skip
        model = keras.models.Model([a, b], function([a, b]))
        assert [type(layer.kind) for layer in model.graph.layers()] == [type(cls.kind)]
    assert keras.models.Sequential is keras.Sequential and keras.models.load_model is keras.load_model


def test_loss_and_metric_objects_compile_as_their_names():
    x = keras.Input(shape=(4,))
    model = keras.Model(x, keras.layers.Dense(3)(x))
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy()], target="numpy")  # fmt: skip
    logs = model.evaluate(np.ones((4, 4), np.float32), np.zeros(4, np.int32), return_dict=True)
    assert set(logs) == {"loss", "sparse_categorical_accuracy"}
    logits = model.predict(np.ones((1, 4), np.float32))[0].astype(np.float64)
    expected = np.log(np.exp(logits).sum()) - logits[0]  # crossentropy from logits, label 0
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.losses.MeanSquaredError(reduction="sum"),
        lambda: keras.losses.BinaryCrossentropy(axis=1),
        lambda: keras.metrics.BinaryAccuracy(threshold=0.7),
    ],
)
def test_loss_and_metric_arguments_kdsl_lacks_are_refused(make):
    with pytest.raises(KdslArgumentError):
        make()


def test_to_categorical_follows_keras():
    """keras/src/utils/numerical_utils.py: a trailing axis of 1 dropped, classes = max + 1 by default."""
    np.testing.assert_array_equal(keras.utils.to_categorical([[1], [0], [2]]), np.eye(3)[[1, 0, 2]])
    assert keras.utils.to_categorical(np.zeros((2, 5), int), num_classes=4).shape == (2, 5, 4)
    with pytest.raises(KdslArgumentError, match=r"\[0, 2\)"):
        keras.utils.to_categorical([0, 3], num_classes=2)
