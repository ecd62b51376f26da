"""Datasets as Keras provides them: `kdsl.datasets.mnist.load_data()`, `kdsl.datasets.fashion_mnist.load_data()`."""

from kdsl.datasets import fashion_mnist, mnist

__all__ = ["fashion_mnist", "mnist"]
