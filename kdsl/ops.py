"""`kdsl.ops`: Keras's elementwise `keras.ops` functions on the symbolic tensors of a model being built.

    h = kdsl.ops.tanh(kdsl.layers.Dense(64)(x)) + x   # the same graph as `h = tanh(dense(x, 64)) + x` in `.kd`

Each call adds an operation with no weights to the model, as Keras 3 does; numbers broadcast as scalars and tensors
as NumPy's arrays. The operators of the tensors (`x + y`, `1 - f`, `-x`) call these functions.
"""

from __future__ import annotations

from typing import Any

from kdsl.errors import KdslUnsupportedError
from kdsl.layers import Concatenate, KerasTensor
from kdsl.layers import operate as _apply

__all__ = ["abs", "absolute", "add", "concatenate", "divide", "exp", "log", "matmul", "maximum", "minimum",
           "multiply", "negative", "relu", "sigmoid", "softmax", "sqrt", "square", "subtract", "tanh",
           "true_divide"]  # fmt: skip


def add(x1: Any, x2: Any) -> KerasTensor:
    return _apply("add", x1, x2)


def subtract(x1: Any, x2: Any) -> KerasTensor:
    return _apply("subtract", x1, x2)


def multiply(x1: Any, x2: Any) -> KerasTensor:
    return _apply("multiply", x1, x2)


def divide(x1: Any, x2: Any) -> KerasTensor:
    return _apply("divide", x1, x2)


def true_divide(x1: Any, x2: Any) -> KerasTensor:
    """What `x1 / x2` calls, as in Keras (named `true_divide` in the model, where `divide` is named `divide`)."""
    return _apply("true_divide", x1, x2)


def negative(x: Any) -> KerasTensor:
    return _apply("negative", x)


def minimum(x1: Any, x2: Any) -> KerasTensor:
    return _apply("minimum", x1, x2)


def maximum(x1: Any, x2: Any) -> KerasTensor:
    return _apply("maximum", x1, x2)


def tanh(x: Any) -> KerasTensor:
    return _apply("tanh", x)


def sigmoid(x: Any) -> KerasTensor:
    return _apply("sigmoid", x)


def relu(x: Any) -> KerasTensor:
    return _apply("relu", x)


def exp(x: Any) -> KerasTensor:
    return _apply("exp", x)


def log(x: Any) -> KerasTensor:
    return _apply("log", x)


def sqrt(x: Any) -> KerasTensor:
    return _apply("sqrt", x)


def square(x: Any) -> KerasTensor:
    return _apply("square", x)


def absolute(x: Any) -> KerasTensor:
    return _apply("abs", x)


abs = absolute  # Keras spells it both ways


def softmax(x: Any, axis: int = -1) -> KerasTensor:
    return _apply("softmax", x, axis=axis)


def matmul(x1: Any, x2: Any) -> KerasTensor:
    """`x1` (..., k) by a weight (k, n) that a cell holds (`self.add_weight`)."""
    return _apply("matmul", x1, x2)


def concatenate(xs: list[KerasTensor], axis: int = 0) -> KerasTensor:
    """Tensors joined along `axis` (Keras's default, 0, is the batch axis: refused), as a `Concatenate` layer."""
    if axis == 0:
        raise KdslUnsupportedError(
            "`ops.concatenate` along axis 0, the batch axis", hint="join the features: `axis=-1`"
        )
    return Concatenate(axis=axis)(list(xs))
