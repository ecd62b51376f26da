"""Time loops of one step, inlined, with a zero initial state folded through the cell.

A scan over a sequence of one step (a recurrent layer read one timestep at a time, as
DeepBench's one-step GRU is) is its cell applied once. Inlined, the cell's equations are
ordinary ones that fusion and autodiff treat like any other, with no stacked residuals. Its
initial state is most often a zero `fill`, and zeros then fold through the cell: h·U is
zero, and so are the gate terms it feeds; with the recurrent kernel no longer read, its
gradient hᵀ·dz is never computed either. (A one-step GRU(512) at batch 32 multiplies by two
of its four 512×1536 weights' worth, not four.) Folding assumes the weights are finite, as
a zero times a weight is zero only then; a diverging model still shows NaN through the input
kernel.
"""

from __future__ import annotations

from kdsl.ir.builder import Builder
from kdsl.ir.ops.elementwise import ADD, MUL, SUB
from kdsl.ir.ops.linalg import MatMul
from kdsl.ir.ops.scan import Scan
from kdsl.ir.ops.shape import Fill, Split
from kdsl.ir.program import Eqn, Program, Var


def inline_single_steps(program: Program) -> Program:
    """Rewrite `program` in place: every scan of one step becomes its cell; then fold zeros."""
    rename: dict[int, Var] = {}
    b = Builder()
    for eqn in program.eqns:
        eqn.inputs = tuple(rename.get(id(x), x) for x in eqn.inputs)
        nc = eqn.attrs.get("num_carry")
        if isinstance(eqn.op, Scan) and eqn.inputs[nc].shape[0] == 1:
            b.origin = eqn.origin
            rename.update(_inline(b, eqn))
        else:
            b.eqns.append(eqn)
    program.eqns = b.eqns
    program.outputs = [rename.get(id(v), v) for v in program.outputs]
    return fold_zeros(program)


def _inline(b: Builder, scan: Eqn) -> dict[int, Var]:
    """Append `scan`'s cell, applied once, to `b`; returns what its outputs are renamed to."""
    body, nc, nx = scan.attrs["body"], scan.attrs["num_carry"], scan.attrs["num_xs"]
    inner: dict[int, Var] = {}
    for k, (var, outer) in enumerate(zip(body.inputs, scan.inputs)):
        inner[id(var)] = b.reshape(outer, shape=outer.shape[1:]) if nc <= k < nc + nx else outer
    for eqn in body.eqns:
        b.eqns.append(Eqn(eqn.op, tuple(inner.get(id(x), x) for x in eqn.inputs), eqn.outputs, eqn.attrs, eqn.origin))
    results = [inner.get(id(v), v) for v in body.outputs]
    stacked = [b.reshape(y, shape=(1, *y.shape)) for y in results[nc:]]
    return {id(outer): new for outer, new in zip(scan.outputs, [*results[:nc], *stacked])}


def fold_zeros(program: Program) -> Program:
    """Values known to be zero (zero fills, and what products and sums make of them) stop costing work."""
    b = Builder()
    zeros: set[int] = set()
    rename: dict[int, Var] = {}

    def zero_like(eqn: Eqn, var: Var, sizes: Var) -> None:
        """`var` is zero: a fill of its shape, whose leading sizes `sizes` also has."""
        lead = next(n for n in range(min(sizes.rank, var.rank), -1, -1) if sizes.shape[:n] == var.shape[:n])
        b.origin = eqn.origin
        zero = b.fill(sizes, lead=lead, tail=var.shape[lead:], value=0.0)
        rename[id(var)] = zero
        zeros.add(id(zero))

    for eqn in program.eqns:
        eqn.inputs = tuple(rename.get(id(x), x) for x in eqn.inputs)
        zero_in = [id(x) in zeros for x in eqn.inputs]
        op = eqn.op
        if isinstance(op, Fill) and eqn.attrs["value"] == 0:
            zeros.add(id(eqn.out))
        elif (isinstance(op, MatMul) or op is MUL) and any(zero_in):
            zero_like(eqn, eqn.out, eqn.inputs[zero_in.index(True)])
            continue
        elif isinstance(op, Split) and zero_in[0]:
            for piece in eqn.outputs:
                zero_like(eqn, piece, eqn.inputs[0])
            continue
        elif op in (ADD, SUB) and zero_in[1] and eqn.inputs[0].shape == eqn.out.shape:
            rename[id(eqn.out)] = eqn.inputs[0]
            continue
        elif op is ADD and zero_in[0] and eqn.inputs[1].shape == eqn.out.shape:
            rename[id(eqn.out)] = eqn.inputs[1]
            continue
        b.eqns.append(eqn)
    program.eqns = b.eqns
    program.outputs = [rename.get(id(v), v) for v in program.outputs]
    return program
