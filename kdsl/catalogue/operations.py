"""Operations: Keras's elementwise `keras.ops` functions and the arithmetic of tensors (`x + y`, `-x`, `tanh(x)`),
and `matmul` by a weight a cell holds.

As in a Keras 3 functional model, each is a node of the graph with no weights, named as Keras names the operation
(`add`, `true_divide`, `tanh`...). Numbers among the operands are kept in the node's configuration (`constants`,
None where the operand is a tensor) and broadcast as scalars; tensors broadcast as NumPy's arrays do.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from kdsl.catalogue.args import Arg, ArgError, integer
from kdsl.catalogue.base import COMMON_ARGS, Config, LayerKind, expect_float, show
from kdsl.errors import KdslArgumentError, KdslShapeError, KdslUnsupportedError
from kdsl.ir.ops.base import broadcast_dims
from kdsl.ir.types import BATCH, TensorType

Operand = Any  # a tensor of the caller's (a `Value`, a `KerasTensor`) or a Python number


class Operation(LayerKind):
    """One `keras.ops` function. `name` is how kdsl calls it (`ops.add`), `function` how `.kd` and `kdsl.ops` do
    (`add`), `symbol` the operator that writes it (`+`), `op` the IR op it lowers to."""

    supports_masking = False  # as in Keras, an operation's result carries no mask
    min_inputs, max_inputs = 1, 2

    def __init__(self, function: str, keras: str, arity: int, op: str, symbol: str | None = None):
        self.function, self.keras, self.arity, self.op, self.symbol = function, keras, arity, op, symbol
        self.name = f"ops.{function}"
        self.args = (Arg("axis", integer, -1),) if function == "softmax" else ()
        self.max_inputs = arity

    @property
    def default_name(self) -> str:
        """Keras's automatic name of the operation: its class name in snake case."""
        return "".join(f"_{c.lower()}" if c.isupper() else c for c in self.keras).lstrip("_")

    def config(self, operands: Sequence[Operand], **settings: Any) -> dict[str, Any]:
        """The node's configuration for these operands: numbers are kept as constants, tensors as None."""
        if len(operands) != self.arity:
            raise KdslArgumentError(f"`{self.function}` takes {self.arity} operand(s), got {len(operands)}")
        constants = tuple(float(x) if is_number(x) else None for x in operands)
        if not all(math.isfinite(c) for c in constants if c is not None):
            raise KdslArgumentError(f"`{self.function}` takes finite numbers, got {operands}")
        if all(c is not None for c in constants):
            raise KdslArgumentError(f"`{self.function}` needs a tensor among its operands, got only numbers")
        config = {arg.name: arg.default for arg in (*self.args, *COMMON_ARGS)}
        for arg in self.args:
            if arg.name in settings:
                try:
                    config[arg.name] = arg.convert(settings[arg.name])
                except ArgError as error:
                    raise KdslArgumentError(f"`{self.function}` {arg.name}: {error.message}", hint=error.hint) from None
        unknown = sorted(set(settings) - set(config))
        if unknown:
            raise KdslArgumentError(f"`{self.function}` takes no `{unknown[0]}`")
        if config.get("axis", -1) != -1:
            raise KdslUnsupportedError(
                f"`{self.function}` over axis {config['axis']} is not supported", hint="kdsl takes the last axis: -1"
            )
        return {**config, "constants": constants}

    def output_types(self, config: Config, inputs: Sequence[TensorType]) -> list[TensorType]:
        for x in inputs:
            expect_float(self, x)
        try:
            dims = broadcast_dims(*(x.dims for x in inputs))
        except ValueError:
            shapes = " and ".join(show(x) for x in inputs)
            raise KdslShapeError(
                f"`{self.symbol or self.function}` cannot broadcast shapes {shapes}",
                hint="shapes broadcast as NumPy's: aligned on the right, each size equal or 1",
            ) from None
        return [TensorType("f32", dims)]

    def operands(self, config: Config, tensors: Sequence[Any]) -> list[Any]:
        """The operands in order: the constants of the configuration with the tensors in the gaps."""
        given = iter(tensors)
        return [next(given) if c is None else c for c in config["constants"]]


class MatMul(Operation):
    """`matmul(x, w)`: x (..., k) by a weight (k, n) that a cell holds (Keras's `ops.matmul(inputs, self.kernel)`)."""

    def config(self, operands: Sequence[Operand], **settings: Any) -> dict[str, Any]:
        if any(is_number(x) for x in operands):
            raise KdslArgumentError("`matmul` multiplies two tensors, not a number", hint="multiply by `*` instead")
        return super().config(operands, **settings)

    def output_types(self, config: Config, inputs: Sequence[TensorType]) -> list[TensorType]:
        x, w = inputs
        expect_float(self, x)
        expect_float(self, w)
        if w.rank != 2 or BATCH in w.dims or x.dims[-1] != w.dims[0]:
            raise KdslShapeError(
                f"`matmul` multiplies (..., k) by a weight (k, n), got {show(x)} and {show(w)}",
                hint="the second operand is a weight a cell holds: `self.add_weight(shape=(k, n))`",
            )
        return [TensorType("f32", (*x.dims[:-1], w.dims[1]))]


def is_number(x: Any) -> bool:
    """A real number (NumPy's scalars included), not a truth value."""
    return isinstance(x, numbers.Real) and not isinstance(x, bool | np.bool_)


# fmt: off
OPERATIONS: dict[str, Operation] = {op.function: op for op in (
    Operation("add", "Add", 2, "add", "+"),
    Operation("subtract", "Subtract", 2, "sub", "-"),
    Operation("multiply", "Multiply", 2, "mul", "*"),
    Operation("true_divide", "TrueDivide", 2, "div", "/"),
    Operation("divide", "Divide", 2, "div"),
    Operation("negative", "Negative", 1, "neg", "-"),
    Operation("minimum", "Minimum", 2, "minimum"),
    Operation("maximum", "Maximum", 2, "maximum"),
    Operation("tanh", "Tanh", 1, "tanh"),
    Operation("sigmoid", "Sigmoid", 1, "sigmoid"),
    Operation("relu", "Relu", 1, "relu"),
    Operation("exp", "Exp", 1, "exp"),
    Operation("log", "Log", 1, "log"),
    Operation("sqrt", "Sqrt", 1, "sqrt"),
    Operation("square", "Square", 1, "square"),
    Operation("abs", "Absolute", 1, "abs"),
    Operation("softmax", "Softmax", 1, "softmax"),
    MatMul("matmul", "Matmul", 2, "matmul"),
)}
# fmt: on
BINARY = {op.symbol: op for op in OPERATIONS.values() if op.symbol and op.arity == 2}  # `+` -> add
NEGATIVE = OPERATIONS["negative"]
CALLABLE = {name: op for name, op in OPERATIONS.items() if op.symbol is None}  # written `tanh(x)` in `.kd`
