"""What a primitive op is: one definition holding its shape rule, NumPy reference, gradient and CPU template.

Every backend reads the same definition: the NumPy backend calls `reference`, autodiff
calls `vjp`, and the CPU code generator asks `scalar` (elementwise ops, fused into
loops) or `cpu` (everything else) for Numba source text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from kdsl.ir.types import Dim, TensorType

if TYPE_CHECKING:
    from kdsl.backends.cpu.emitter import Emitter
    from kdsl.ir.program import Builder, Eqn, Var

Attrs = dict[str, Any]
Grads = list["Var | None"]


class Op:
    name: ClassVar[str]
    single_output: ClassVar[bool] = True
    elementwise: ClassVar[bool] = False  # the CPU backend fuses chains of these into one loop
    differentiable: ClassVar[bool] = True  # False: no gradient flows through (masks, comparisons)

    def infer(self, attrs: Attrs, *types: TensorType) -> list[TensorType]:
        raise NotImplementedError(self.name)

    def reference(self, attrs: Attrs, *xs: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError(self.name)

    def vjp(self, b: Builder, eqn: Eqn, grads: Grads) -> Grads:
        """Gradients of the inputs, given gradients of the outputs (None where an output has none)."""
        raise NotImplementedError(f"`{self.name}` has no gradient")

    def scalar(self, attrs: Attrs, *args: str) -> str:
        """Elementwise ops: a Numba expression for one element, from the expressions of its inputs."""
        raise NotImplementedError(self.name)

    def cpu(self, em: Emitter, eqn: Eqn) -> None:
        """Other ops: emit Numba statements that compute the outputs into their buffers."""
        raise NotImplementedError(f"`{self.name}` has no CPU template")

    def flops(self, eqn: Eqn, sizes: dict[str, int]) -> int:
        """Floating-point operations of one evaluation, for `--explain`."""
        return 0

    def __repr__(self) -> str:
        return self.name


def broadcast_dims(*shapes: Sequence[Dim]) -> tuple[Dim, ...]:
    """NumPy broadcasting of symbolic shapes, aligned on the right."""
    rank = max((len(s) for s in shapes), default=0)
    dims: list[Dim] = []
    for axis in range(rank):
        sizes = {s[axis - rank + len(s)] for s in shapes if axis - rank + len(s) >= 0} - {1}
        if len(sizes) > 1:
            raise ValueError(f"shapes {[tuple(s) for s in shapes]} do not broadcast")
        dims.append(sizes.pop() if sizes else 1)
    return tuple(dims)


def unbroadcast(b: Builder, grad: Var, like: Var) -> Var:
    """Sum a gradient over the axes along which `like` was broadcast, back to `like`'s shape."""
    if grad.shape == like.shape:
        return grad
    lead = grad.rank - like.rank
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(like.shape) if d == 1 and grad.shape[lead + i] != 1
    )
    summed = b.reduce_sum(grad, axes=axes, keepdims=False)
    return summed if summed.shape == like.shape else b.reshape_like(summed, like)


def numel(dims: Sequence[Dim], sizes: dict[str, int]) -> int:
    """The number of elements of a shape once its symbols are known (products of symbols included)."""
    total = 1
    for d in dims:
        if isinstance(d, int):
            total *= d
        else:
            for factor in d.split("*"):
                total *= int(factor) if factor.isdigit() else sizes.get(factor, 1)
    return total
