"""Samples of image datasets shipped inside kdsl, so that the image examples train with no download.

Each holds 2,000 training and 500 test images with their labels, drawn uniformly at random from the
official files: with `rng = np.random.default_rng(0)`, the training images at the sorted indices
`rng.choice(60_000, 2_000, replace=False)`, then the test images at the sorted indices
`rng.choice(10_000, 500, replace=False)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class Sample:
    file: str  # in kdsl/datasets/data/

    def load_data(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """`(x_train, y_train), (x_test, y_test)`: uint8 images (N, 28, 28) and labels (N,), as Keras returns."""
        with resources.files("kdsl.datasets").joinpath(f"data/{self.file}").open("rb") as f, np.load(f) as data:
            return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
