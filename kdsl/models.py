"""Keras's `keras.models` namespace: `Model`, `Sequential`, `load_model`."""

from kdsl.model import Model, Sequential, load_model

__all__ = ["Model", "Sequential", "load_model"]
