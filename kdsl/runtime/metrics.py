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


def batch_totals(
    name: str, y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray | None, weight: np.ndarray | None = None
) -> tuple[float, float]:
    """The metric's sum over a batch and the weight it counts for, as Keras's mean metrics add them up: each sample's
    mean over its other axes, and one per sample; with weights (a mask (batch, timesteps), sample weights shaped
    as the values, or their product), each sample's mean of values times weights, counting for its mean of the
    weights (so a metric averages over the valid timesteps, and a weighted one by the samples' weights).

    Accuracies count matches rather than average a float array: a few times faster, once a training step.
    """
    if name == "sparse_categorical_accuracy":
        values = np.argmax(y_pred, axis=-1) == y_true.reshape(y_pred.shape[:-1])
    elif name == "categorical_accuracy":
        values = np.argmax(y_pred, axis=-1) == np.argmax(y_true, axis=-1)
    elif name == "binary_accuracy":
        values = ((y_pred > 0.5) == (y_true > 0.5)).mean(axis=-1)
    elif name == "mean_squared_error":
        values = np.square(y_true - y_pred).mean(axis=-1)
    elif name == "mean_absolute_error":
        values = np.abs(y_true - y_pred).mean(axis=-1)
    else:
        raise ValueError(f"unknown metric {name!r}")
    samples = max(values.shape[0], 1) if values.ndim else 1
    per_sample = max(values.size // samples, 1)
    if mask is None and weight is None:
        total = np.count_nonzero(values) if values.dtype == bool else float(values.sum())
        return total / per_sample, values.shape[0] if values.ndim else 1
    weights = np.ones(values.shape) if mask is None else mask.reshape(values.shape).astype(np.float64)
    if weight is not None:
        weights = weights * np.asarray(weight, np.float64).reshape(values.shape)
    return float((values * weights).sum()) / per_sample, float(weights.sum()) / per_sample


class Mean:
    """A running mean weighted by sample counts (or, where a mask weighs timesteps, by fractions of samples)."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, value: float, count: int) -> None:
        self.add(value * count, count)

    def add(self, total: float, count: float) -> None:
        self.total += total
        self.count += count

    def result(self) -> float:
        """The mean; 0 when nothing counted (every timestep masked), as Keras's `divide_no_nan` gives."""
        return float(self.total / self.count) if self.count else 0.0
