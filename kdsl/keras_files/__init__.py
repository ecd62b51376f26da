"""Keras's own model files, read and written: the `.keras` archive of Keras 3, its `.weights.h5` weights files and
the legacy `.h5` whole-model file.

A Keras model becomes a kdsl model with the same layers, arguments, graph, weights and training settings, and a
kdsl model becomes a file Keras 3 loads. Nothing in a file is executed or unpickled: layers are known only by
Keras's own class names, from a fixed list, and whatever kdsl cannot honour is refused naming the layer and why.
HDF5 is read and written through `h5py` (the optional extra `kdsl[keras]`); TensorFlow and Keras are not needed.
"""

from kdsl.keras_files.files import (
    KERAS_SUFFIXES,
    is_keras_file,
    load_keras_model,
    load_keras_weights,
    read_keras_model,
    save_keras_model,
    save_keras_weights,
)

__all__ = [
    "KERAS_SUFFIXES",
    "is_keras_file",
    "load_keras_model",
    "load_keras_weights",
    "read_keras_model",
    "save_keras_model",
    "save_keras_weights",
]
