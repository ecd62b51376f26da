"""Metrics computed from a batch's outputs and targets, averaged over an epoch as Keras averages them."""

from __future__ import annotations

import numpy as np

from kdsl.catalogue.args import FnSpec
from kdsl.catalogue.functions import METRICS

ACCURACY_FOR_LOSS = {
    "sparse_categorical_crossentropy": "sparse_categorical_accuracy",
    "categorical_crossentropy": "categorical_accuracy",
    "binary_crossentropy": "binary_accuracy",
}


def resolve(metric: str | FnSpec, loss: FnSpec, output_dims: tuple, target_rank: int) -> str:
    """The metric's canonical name; plain `accuracy` becomes the variant that fits the loss, as in Keras."""
    name = METRICS.checked(metric).name
    if name != "accuracy":
        return name
    if loss.name in ACCURACY_FOR_LOSS:
        return ACCURACY_FOR_LOSS[loss.name]
    if output_dims[-1] == 1:
        return "binary_accuracy"
    return "categorical_accuracy" if target_rank == len(output_dims) else "sparse_categorical_accuracy"


def batch_mean(name: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The metric's mean over a batch (over samples, and the sample axes Keras averages over).

    Accuracies count matches rather than average a float array: a few times faster, once a training step.
    """
    if name == "sparse_categorical_accuracy":
        hits = np.argmax(y_pred, axis=-1) == y_true.reshape(y_pred.shape[:-1])
    elif name == "categorical_accuracy":
        hits = np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)
    elif name == "binary_accuracy":
        hits = (y_pred > 0.5) == (y_true > 0.5)
    elif name == "mean_squared_error":
        return float(np.square(y_true - y_pred).mean())
    elif name == "mean_absolute_error":
        return float(np.abs(y_true - y_pred).mean())
    else:
        raise ValueError(f"unknown metric {name!r}")
    return np.count_nonzero(hits) / max(hits.size, 1)


class Mean:
    """A running mean weighted by sample counts."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, value: float, count: int) -> None:
        self.total += value * count
        self.count += count

    def result(self) -> float:
        return self.total / max(self.count, 1)
