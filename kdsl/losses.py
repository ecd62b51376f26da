"""Keras's loss classes, for `compile(loss=...)`: `kdsl.losses.SparseCategoricalCrossentropy(from_logits=True)`.

Each is the checked name and arguments of a loss kdsl computes in its training program; an argument kdsl does
not take (`reduction` other than Keras's default, `ignore_class`, ...) is refused, never ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar

from kdsl.catalogue.args import FnSpec
from kdsl.catalogue.functions import LOSSES, METRICS, FunctionTable
from kdsl.errors import KdslArgumentError

__all__ = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "SparseCategoricalCrossentropy",
]


class KerasFunction(FnSpec):
    """A loss or metric object as Keras makes one: `Class(**arguments)`, checked against kdsl's table."""

    table: ClassVar[FunctionTable]
    function: ClassVar[str]

    def __init__(self, **arguments: Any):
        arguments.pop("name", None)  # Keras's display name: it changes no number
        if arguments.pop("reduction", "sum_over_batch_size") != "sum_over_batch_size":
            raise KdslArgumentError(
                f"`{type(self).__name__}` reduces only as Keras does by default",
                hint="leave out `reduction` (sum_over_batch_size)",
            )
        spec = self.table.checked(FnSpec(self.function, arguments))
        object.__setattr__(self, "name", spec.name)
        object.__setattr__(self, "args", spec.args)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.args.items())})"


class Loss(KerasFunction):
    table = LOSSES


class MeanSquaredError(Loss):
    function = "mean_squared_error"


class MeanAbsoluteError(Loss):
    function = "mean_absolute_error"


class BinaryCrossentropy(Loss):
    function = "binary_crossentropy"


class CategoricalCrossentropy(Loss):
    function = "categorical_crossentropy"


class SparseCategoricalCrossentropy(Loss):
    function = "sparse_categorical_crossentropy"


class Metric(KerasFunction):
    table = METRICS
