"""Keras's metric classes, for `compile(metrics=[...])`: `kdsl.metrics.SparseCategoricalAccuracy()`.

Keras's `Accuracy` (exact equality of labels and predictions) is not here: the string `"accuracy"` picks the
accuracy the loss implies, as in Keras.
"""

from __future__ import annotations

from kdsl.losses import Metric

__all__ = [
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "SparseCategoricalAccuracy",
]


class BinaryAccuracy(Metric):
    function = "binary_accuracy"


class CategoricalAccuracy(Metric):
    function = "categorical_accuracy"


class SparseCategoricalAccuracy(Metric):
    function = "sparse_categorical_accuracy"


class MeanSquaredError(Metric):
    function = "mean_squared_error"


class MeanAbsoluteError(Metric):
    function = "mean_absolute_error"
