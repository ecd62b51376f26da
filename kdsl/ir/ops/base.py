"""What a primitive op is: one definition holding its shape rule, NumPy reference, gradient, scalar form and cost.

An op knows nothing of backends. The interpreter calls `reference`, autodiff calls `vjp`, and
the code generators write elementwise ops from `scalar` (fused into loops); every other op has a
rule in each backend's table, keyed by its class (`kdsl.backends.cpu.ops`, `kdsl.backends.cuda.ops`).
The flags below are what passes and backends may ask of an op besides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from kdsl.ir.types import Dim, TensorType

if TYPE_CHECKING:
    from kdsl.ir.builder import Builder
    from kdsl.ir.program import Eqn, Var

Attrs = dict[str, Any]
Grads = list["Var | None"]


class Op:
    name: ClassVar[str]
    single_output: ClassVar[bool] = True
    elementwise: ClassVar[bool] = False  # one output element from the same element of each input: fused into loops
    differentiable: ClassVar[bool] = True  # False: no gradient flows through (masks, comparisons)
    view: ClassVar[bool] = False  # the output is the input's data, reshaped: no copy where a backend can alias
    product: ClassVar[bool] = False  # a matrix product: BLAS or a GEMM kernel does it
    sizes_only: ClassVar[bool] = False  # the output depends on the input's sizes alone, not its values

    def row_wise(self, eqn: Eqn) -> bool:
        """Whether each row (sample) of the outputs comes from the same row of the inputs alone, so a chunk
        of the batch can be computed apart."""
        return self.elementwise

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
