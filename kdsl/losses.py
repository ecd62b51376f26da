"""Keras's loss classes and functions, for `compile(loss=...)`: `kdsl.losses.SparseCategoricalCrossentropy(
from_logits=True)`, `kdsl.losses.mean_squared_error`.

Each is the checked name and arguments of a loss kdsl computes in its training program; an argument kdsl does
not take (`reduction` other than Keras's default, `ignore_class`, ...) is refused, never ignored.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from kdsl.catalogue.args import FnSpec
from kdsl.catalogue.functions import LOSSES, METRICS, FunctionTable
from kdsl.errors import KdslArgumentError
from kdsl.ir.builder import Builder
from kdsl.ir.interpret import run_program
from kdsl.ir.types import TensorType
from kdsl.passes.losses import per_sample_loss, target_type

__all__ = [
    "BinaryCrossentropy",
    "CategoricalCrossentropy",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "SparseCategoricalCrossentropy",
    "binary_crossentropy",
    "categorical_crossentropy",
    "mae",
    "mean_absolute_error",
    "mean_squared_error",
    "mse",
    "sparse_categorical_crossentropy",
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


class LossFunction(FnSpec):
    """A Keras loss function, such as `kdsl.losses.mean_squared_error`: given to `compile()` it is that loss;
    called, it gives each sample's loss as kdsl's training program computes it (Keras's definition)."""

    def __init__(self, name: str):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "args", {})

    def __call__(self, y_true: Any, y_pred: Any, **arguments: Any) -> np.ndarray:
        spec = LOSSES.checked(FnSpec(self.name, arguments))
        predicted = np.asarray(y_pred, np.float32)
        sparse = spec.name == "sparse_categorical_crossentropy"
        labels = np.asarray(y_true, np.int32 if sparse else np.float32)
        b = Builder()
        p = b.var(TensorType("f32", predicted.shape), "y_pred")
        t = b.var(target_type(spec, p.type), "y_true")
        if labels.shape != t.shape:
            raise KdslArgumentError(f"`{self.name}` takes y_true of shape {t.shape} for y_pred {predicted.shape}, "
                                    f"got {labels.shape}")  # fmt: skip
        loss, _ = per_sample_loss(b, spec, t, p, None)
        return run_program(b.program([t, p], [loss]), [labels, predicted])[0]

    def __repr__(self) -> str:
        return f"<loss function {self.name}>"


mean_squared_error = LossFunction("mean_squared_error")
mean_absolute_error = LossFunction("mean_absolute_error")
binary_crossentropy = LossFunction("binary_crossentropy")
categorical_crossentropy = LossFunction("categorical_crossentropy")
sparse_categorical_crossentropy = LossFunction("sparse_categorical_crossentropy")
mse, mae = mean_squared_error, mean_absolute_error
