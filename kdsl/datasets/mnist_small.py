"""A small real dataset shipped inside kdsl: 2,000 training and 500 test images drawn from MNIST.

For trying kdsl with no download (`kdsl train examples/mnist_lstm.kd --data mnist_small`);
drawn uniformly at random, seed 0, from the official MNIST files.
"""

from importlib import resources

import numpy as np


def load_data() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """`(x_train, y_train), (x_test, y_test)`: uint8 images (N, 28, 28) and labels (N,), as Keras returns."""
    with resources.files("kdsl.datasets").joinpath("data/mnist_small.npz").open("rb") as f, np.load(f) as data:
        return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])
