"""Tensor types of the IR: a dtype and a tuple of dims, each a number or a symbol.

A symbolic dim is a name (`batch`, `time`) or a product of names and numbers that
shape rules could not reduce (`28*time`), kept as its canonical string.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Dim = int | str

BATCH = "batch"

DTYPE_ALIASES = {"f32": "f32", "float32": "f32", "i32": "i32", "int32": "i32"}


@dataclass(frozen=True)
class TensorType:
    dtype: str  # "f32" or "i32"
    dims: tuple[Dim, ...]

    @property
    def rank(self) -> int:
        return len(self.dims)

    def with_dims(self, dims: tuple[Dim, ...] | list[Dim]) -> TensorType:
        return TensorType(self.dtype, tuple(dims))

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.dims)}]"

    def keras_shape(self) -> str:
        """The shape as Keras prints it: `(None, 28, 64)`, the batch dim as None."""
        dims = ["None" if d == BATCH else str(d) for d in self.dims]
        return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def dim_product(dims: tuple[Dim, ...] | list[Dim]) -> Dim:
    """The product of dims; numbers multiply out, symbols stay as sorted factors."""
    number = math.prod(d for d in dims if isinstance(d, int))
    symbols = sorted(factor for d in dims if isinstance(d, str) for factor in d.split("*"))
    if not symbols:
        return number
    if number == 0:
        return 0
    return "*".join(([str(number)] if number != 1 else []) + symbols)


def concrete(dims: Sequence[Dim], sizes: Mapping[str, int]) -> tuple[int, ...]:
    """A shape's sizes once its symbols are known (a product of symbols multiplied out)."""
    shape = []
    for d in dims:
        size = 1
        for factor in str(d).split("*"):
            size *= int(factor) if factor.isdigit() else sizes[factor]
        shape.append(size)
    return tuple(shape)


def numel(dims: Sequence[Dim], sizes: Mapping[str, int]) -> int:
    """The number of elements of a shape once its symbols are known."""
    return math.prod(concrete(dims, sizes))
