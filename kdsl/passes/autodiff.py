"""Reverse-mode autodiff over lowered programs.

`backprop` walks equations backwards, asking each op for its vector-Jacobian product and
summing the gradients of values used more than once. It differentiates only along paths
from the requested inputs; whatever it emits that no output needs, `dce` removes. A scan
differentiates through backpropagation through time (`kdsl.passes.bptt`), which calls back
in here for the cell: its gradient is a second scan running the other way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from kdsl.ir.builder import Builder
from kdsl.ir.ops.scan import Scan
from kdsl.ir.program import Eqn, Var
from kdsl.passes.bptt import backward_scan


def active_vars(eqns: Iterable[Eqn], wrt: Iterable[Var]) -> set[int]:
    """Variables that depend differentiably on `wrt`."""
    active = {id(v) for v in wrt}
    for eqn in eqns:
        if eqn.op.differentiable and any(id(x) in active for x in eqn.inputs):
            active.update(id(v) for v in eqn.outputs if v.type.dtype == "f32")
    return active


def vjp(b: Builder, eqn: Eqn, grads: list[Var | None]) -> list[Var | None]:
    """The gradients of `eqn`'s inputs from its outputs': the op's own rule, or backpropagation through time."""
    if isinstance(eqn.op, Scan):
        return backward_scan(b, eqn, grads, backprop)
    return eqn.op.vjp(b, eqn, grads)


def backprop(b: Builder, eqns: Sequence[Eqn], seeds: dict[int, Var], wrt: Sequence[Var]) -> list[Var | None]:
    """Gradients of `wrt`, given the gradients `seeds` (by variable id) of some values computed by `eqns`."""
    active = active_vars(eqns, wrt)
    grads: dict[int, Var] = dict(seeds)
    for eqn in reversed(list(eqns)):  # vjp rules append to the list being walked
        out_grads = [grads.get(id(v)) for v in eqn.outputs]
        if all(g is None for g in out_grads) or not any(id(x) in active for x in eqn.inputs):
            continue
        b.origin = eqn.origin
        for x, g in zip(eqn.inputs, vjp(b, eqn, out_grads)):
            if g is None or id(x) not in active:
                continue
            grads[id(x)] = b.add(grads[id(x)], g) if id(x) in grads else g
    return [grads.get(id(v)) for v in wrt]
