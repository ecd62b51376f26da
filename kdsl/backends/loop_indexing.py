"""How a fused loop addresses its values, the same on every target: NumPy broadcasting of a value to the
loop's shape, and the value a piece (of a free split or concat) lives in, at its offset."""

from __future__ import annotations

from collections.abc import Sequence

from kdsl.ir.program import Var
from kdsl.ir.types import Dim
from kdsl.passes.fuse import Plan


def broadcast_index(var: Var, shape: tuple[Dim, ...], idx: Sequence[str]) -> list[str]:
    """The index into `var` of element `idx` of a loop over `shape`: size-1 axes broadcast read element 0."""
    lead = len(shape) - var.rank
    return ["0" if d == 1 and shape[lead + a] != 1 else idx[lead + a] for a, d in enumerate(var.shape)]


def piece_index(fused: Plan, var: Var, idx: Sequence[str]) -> tuple[Var, list[str]]:
    """The value element `idx` of `var` is stored in, and its index there: `var` itself, or the whole it is a
    piece of, offset along the last axis."""
    idx = list(idx)
    while id(var) in fused.pieces:
        var, offset = fused.pieces[id(var)]
        idx = [*idx[:-1], f"{offset} + {idx[-1]}"]
    return var, idx
