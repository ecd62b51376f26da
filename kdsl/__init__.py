"""kdsl: a model-graph compiler for dense and recurrent networks.

Models come from `.kd` files (`kdsl.load_model_file`) or from Keras-style layer calls
(`kdsl.Input`, `kdsl.layers`, `kdsl.Model`, `kdsl.Sequential`); both give the same IR.
"""

from kdsl import data, distribute, layers, losses, metrics, models, ops, regularizers, utils
from kdsl.devices import devices
from kdsl.errors import KdslError
from kdsl.layers import Input
from kdsl.model import Model, Sequential, load_model, load_model_file
from kdsl.runtime import callbacks, optimizers

__all__ = [
    "Input",
    "KdslError",
    "Model",
    "Sequential",
    "callbacks",
    "data",
    "devices",
    "distribute",
    "layers",
    "load_model",
    "load_model_file",
    "losses",
    "metrics",
    "models",
    "ops",
    "optimizers",
    "regularizers",
    "utils",
]
__version__ = "0.1.0"
