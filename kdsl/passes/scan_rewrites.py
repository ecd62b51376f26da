"""What the passes that rewrite time loops share: visiting each loop, and checking a rewritten one."""

from __future__ import annotations

from collections.abc import Callable

from kdsl.ir.builder import Builder
from kdsl.ir.ops.scan import Scan
from kdsl.ir.program import Eqn, Program


def rewrite_scans(program: Program, rewrite: Callable[[Builder, Eqn], Eqn]) -> Program:
    """Replace each scan of `program` by `rewrite(b, scan)`, whose builder `b` puts equations just before it."""
    eqns: list[Eqn] = []
    for eqn in program.eqns:
        eqns.append(rewrite(Builder(eqn.origin, eqns), eqn) if isinstance(eqn.op, Scan) else eqn)
    program.eqns = eqns
    return program


def rebuilt(scan: Eqn, inputs: tuple, attrs: dict) -> Eqn:
    """`scan` with new inputs and attributes (its body among them), checked to fit each other."""
    scan.op.infer(attrs, *(x.type for x in inputs))
    return Eqn(scan.op, inputs, scan.outputs, attrs, scan.origin)
