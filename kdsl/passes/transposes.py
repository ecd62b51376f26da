"""Transposes that undo each other.

A recurrent layer returns its sequence batch-major, and a recurrent layer reading it turns it
time-major again: two copies of the whole sequence that cancel, in the forward pass and again
in the backward pass. A transpose of a transpose is one transpose of
the source, and none when the permutations cancel; done before autodiff, the backward pass has
none either. A `fill` (a zero initial state) reads only leading sizes from its operand; one
that reads them from a transpose reads them from a program input of the same leading sizes
instead, so the transpose is left to die when nothing else reads it.
"""

from __future__ import annotations

from kdsl.ir.ops.shape import Fill, Transpose
from kdsl.ir.program import Eqn, Program, Var


def cancel_transposes(program: Program) -> Program:
    """Rewrite `program` in place: readers of a transpose pair read the source (or its one transpose)."""
    producers = program.producers()
    results = {id(v) for v in program.outputs}
    rename: dict[int, Var] = {}
    kept = []
    for eqn in program.eqns:
        eqn.inputs = tuple(rename.get(id(x), x) for x in eqn.inputs)
        if isinstance(eqn.op, Fill) and isinstance(producers.get(id(eqn.inputs[0]), eqn).op, Transpose):
            lead = eqn.inputs[0].shape[: eqn.attrs["lead"]]
            sizes = next((v for v in program.inputs if v.shape[: len(lead)] == lead), eqn.inputs[0])
            eqn.inputs = (sizes, *eqn.inputs[1:])
        maker = producers.get(id(eqn.inputs[0])) if isinstance(eqn.op, Transpose) else None
        if maker is not None and isinstance(maker.op, Transpose):
            source = maker.inputs[0]
            perm = tuple(maker.attrs["perm"][axis] for axis in eqn.attrs["perm"])
            if perm == tuple(range(len(perm))) and id(eqn.out) not in results:
                rename[id(eqn.out)] = source
                continue
            eqn = Eqn(eqn.op, (source,), eqn.outputs, {**eqn.attrs, "perm": perm}, eqn.origin)
            producers[id(eqn.out)] = eqn
        kept.append(eqn)
    program.eqns = kept
    return program
