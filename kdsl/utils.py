"""Keras's `keras.utils` helpers that models' data needs."""

from __future__ import annotations

from typing import Any

import numpy as np

from kdsl.errors import KdslArgumentError

__all__ = ["to_categorical"]


def to_categorical(x: Any, num_classes: int | None = None) -> np.ndarray:
    """Class ids as one-hot rows, as Keras's: a trailing axis of 1 is dropped first; `num_classes` defaults to
    the largest id + 1."""
    ids = np.asarray(x, dtype=np.int64)
    shape = ids.shape[:-1] if ids.ndim > 1 and ids.shape[-1] == 1 else ids.shape
    ids = ids.reshape(-1)
    classes = int(num_classes) if num_classes else (int(ids.max()) + 1 if ids.size else 0)
    if ids.size and (ids.min() < 0 or ids.max() >= classes):
        raise KdslArgumentError(f"class ids must lie in [0, {classes}), got {ids.min()}..{ids.max()}")
    categorical = np.zeros((ids.size, classes))
    categorical[np.arange(ids.size), ids] = 1
    return categorical.reshape((*shape, classes))
