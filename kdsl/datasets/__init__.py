"""Datasets as Keras provides them: `kdsl.datasets.mnist.load_data()`, `kdsl.datasets.fashion_mnist.load_data()`."""

from pathlib import Path

import numpy as np

from kdsl.datasets import fashion_mnist, mnist, mnist_small
from kdsl.errors import KdslError, did_you_mean

NAMED = {"mnist": mnist, "fashion_mnist": fashion_mnist, "mnist_small": mnist_small}

__all__ = ["NAMED", "fashion_mnist", "load", "mnist", "mnist_small"]


def load(name_or_path: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A named dataset or an `.npz` with x_train, y_train, x_test, y_test; uint8 images scaled to [0, 1]."""
    if name_or_path in NAMED:
        splits = NAMED[name_or_path].load_data()
    elif Path(name_or_path).suffix == ".npz" and Path(name_or_path).exists():
        with np.load(name_or_path) as data:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in data]
            if missing:
                raise KdslError(f"{name_or_path} has no {', '.join(missing)}")
            splits = (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
    elif Path(name_or_path).suffix == ".npz":
        raise KdslError(
            f"no file {name_or_path}", hint="give the path of an .npz holding x_train, y_train, x_test, y_test"
        )
    else:
        hint = did_you_mean(name_or_path, list(NAMED)) or f"use one of {', '.join(NAMED)} or a path to an .npz"
        raise KdslError(f"no dataset {name_or_path!r}", hint=hint)
    return tuple((_scaled(x), y) for x, y in splits)  # type: ignore[return-value]


def _scaled(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255 if x.dtype == np.uint8 else x
