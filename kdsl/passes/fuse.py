"""Fusion: which equations become one kernel, and which values never reach memory.

Consecutive elementwise equations over one iteration shape form a single loop; a value
used only inside its loop stays in a register. A `split` whose pieces only feed loops
is free: the loops read the pieces at an offset of the source (a recurrent cell's gates
from one projection). A `concat` of values computed in loops is free too: the loops
store straight into the pieces of its output (a cell's gate gradients); a value in two
such concats is stored into both (a GRU's gate gradients go to the gradients of its
input projection and of its recurrent product). Identical equations are computed once (`cse`).

A plan is data about a program, made once by the pipeline and read by both code generators and
`--explain`; planning never changes the program.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdsl.ir.ops.elementwise import Const
from kdsl.ir.ops.scan import Scan
from kdsl.ir.ops.shape import Concat, Split
from kdsl.ir.program import Eqn, Program, Var
from kdsl.ir.types import Dim


@dataclass
class Kernel:
    """One unit of generated code: a fused `loop`, a single `op`, or a `view` that emits nothing."""

    kind: str
    eqns: list[Eqn]
    shape: tuple[Dim, ...] = ()

    @property
    def origin(self) -> str | None:
        return next((e.origin for e in self.eqns if e.origin), None)


@dataclass
class Plan:
    """A program's kernels in the order they run, and where each value lives."""

    kernels: list[Kernel]
    registers: set[int] = field(default_factory=set)  # values that live only inside their loop
    pieces: dict[int, tuple[Var, int]] = field(default_factory=dict)  # value -> (whole, offset on last axis)
    copies: dict[int, list[tuple[Var, int]]] = field(default_factory=dict)  # value -> more (whole, offset) it fills
    free: set[int] = field(default_factory=set)  # splits and concats that need no code: loops address the pieces
    constants: dict[int, Eqn] = field(default_factory=dict)  # scalar constants by value: written inline
    bodies: dict[int, Plan] = field(default_factory=dict)  # the plan of each scan's cell, by the scan equation

    def body(self, scan: Eqn) -> Plan:
        return self.bodies[id(scan)]


def cse(program: Program) -> Program:
    """Replace each equation that repeats an earlier one (same op, inputs and attributes) by the earlier result."""
    seen: dict[tuple, Eqn] = {}
    rename: dict[int, Var] = {}
    kept = []
    for eqn in program.eqns:
        eqn.inputs = tuple(rename.get(id(x), x) for x in eqn.inputs)
        if "body" in eqn.attrs:
            cse(eqn.attrs["body"])
            _merge_repeated_outputs(eqn, rename)
            kept.append(eqn)
            continue
        key = (id(eqn.op), tuple(id(x) for x in eqn.inputs), repr(sorted(eqn.attrs.items())))
        if key in seen:
            for old, new in zip(eqn.outputs, seen[key].outputs):
                rename[id(old)] = new
            continue
        seen[key] = eqn
        kept.append(eqn)
    program.eqns = kept
    program.outputs = [rename.get(id(v), v) for v in program.outputs]
    return program


def _merge_repeated_outputs(scan: Eqn, rename: dict[int, Var]) -> None:
    """A cell value stacked twice (say as a residual and as a gradient operand) is stacked once."""
    body, nc = scan.attrs["body"], scan.attrs["num_carry"]
    first: dict[int, Var] = {}
    keep = list(range(nc))
    for j in range(nc, len(body.outputs)):
        var = body.outputs[j]
        if id(var) in first:
            rename[id(scan.outputs[j])] = first[id(var)]
        else:
            first[id(var)] = scan.outputs[j]
            keep.append(j)
    body.outputs = [body.outputs[j] for j in keep]
    scan.outputs = tuple(scan.outputs[j] for j in keep)


def sink_into_loops(program: Program) -> list[Eqn]:
    """The equations in the order their kernels run: each elementwise equation moved down to just before its
    first reader when that reader is a loop of its shape.

    A recurrent cell adds the input bias to x_t before the product h·U and the gate math after it;
    moved past the product, the bias joins the gates' loop and its sums never reach memory.
    """
    eqns = list(program.eqns)
    for eqn in reversed(program.eqns):
        if not eqn.op.elementwise or isinstance(eqn.op, Const) or len(eqn.outputs) != 1:
            continue
        at = eqns.index(eqn)
        first = next((j for j in range(at + 1, len(eqns)) if any(x is eqn.out for x in eqns[j].inputs)), None)
        if first is None or first == at + 1:
            continue
        reader = eqns[first]
        if reader.op.elementwise and reader.outputs and reader.out.shape == eqn.out.shape:
            eqns.insert(first - 1, eqns.pop(at))
    return eqns


def plan(program: Program) -> Plan:
    """The fusion plan of `program` and, nested, of every scan's cell."""
    eqns = sink_into_loops(program)
    users = program.uses()
    outputs = {id(v) for v in program.outputs}
    producers = program.producers()
    result = Plan([])
    result.constants = {id(e.out): e for e in eqns if isinstance(e.op, Const)}
    result.bodies = {id(e): plan(e.attrs["body"]) for e in eqns if isinstance(e.op, Scan)}

    def feeds_loops_only(var: Var) -> bool:
        return id(var) not in outputs and all(e.op.elementwise for e in users.get(id(var), []))

    for eqn in eqns:
        if (
            isinstance(eqn.op, Split)
            and eqn.attrs["axis"] == eqn.inputs[0].rank - 1
            and all(feeds_loops_only(v) for v in eqn.outputs)
        ):
            offset = 0
            for piece, size in zip(eqn.outputs, eqn.attrs["sizes"]):
                result.pieces[id(piece)] = (eqn.inputs[0], offset)
                offset += size
            result.free.add(id(eqn))
    for eqn in _concats_in_place(eqns, producers, users, outputs):
        offset = 0
        for piece in eqn.inputs:
            if id(piece) in result.pieces:
                result.copies.setdefault(id(piece), []).append((eqn.out, offset))
            else:
                result.pieces[id(piece)] = (eqn.out, offset)
            offset += piece.shape[-1]
        result.free.add(id(eqn))

    current: Kernel | None = None
    for eqn in eqns:
        if isinstance(eqn.op, Const):
            continue
        if id(eqn) in result.free or eqn.op.view:
            view = Kernel("view", [eqn])
            computed_in_loop = current is not None and any(x is e.out for e in current.eqns for x in eqn.inputs)
            if current is None or computed_in_loop:
                current = None
                result.kernels.append(view)
            else:  # it reads only earlier values: put it before the open loop, which may read it
                result.kernels.insert(result.kernels.index(current), view)
            continue
        if eqn.op.elementwise:
            if current is None or current.shape != eqn.out.shape:
                current = Kernel("loop", [], eqn.out.shape)
                result.kernels.append(current)
            current.eqns.append(eqn)
            continue
        current = None
        result.kernels.append(Kernel("op", [eqn]))

    loop_of = {id(v): id(k) for k in result.kernels if k.kind == "loop" for e in k.eqns for v in e.outputs}
    for kernel in result.kernels:
        if kernel.kind != "loop":
            continue
        for eqn in kernel.eqns:
            v = eqn.out
            readers = users.get(id(v), [])
            if (
                v.rank
                and id(v) not in outputs
                and id(v) not in result.pieces
                and all(loop_of.get(id(r.out)) == id(kernel) for r in readers if r.op.elementwise and r.outputs)
                and all(r.op.elementwise for r in readers)
            ):
                result.registers.add(id(v))
    return result


def _concats_in_place(eqns: list[Eqn], producers, users, outputs) -> list[Eqn]:
    """Last-axis concats whose every piece is computed by a loop, read by nothing but loops and such concats."""
    candidates = [e for e in eqns if isinstance(e.op, Concat) and _pieces_from_loops(e, producers, outputs)]
    while True:
        chosen = {id(e) for e in candidates}
        kept = [
            e
            for e in candidates
            if all(u.op.elementwise or id(u) in chosen for piece in e.inputs for u in users.get(id(piece), []))
        ]
        if len(kept) == len(candidates):
            return kept
        candidates = kept


def _pieces_from_loops(eqn: Eqn, producers, outputs) -> bool:
    if eqn.attrs["axis"] != eqn.out.rank - 1 or len({id(x) for x in eqn.inputs}) != len(eqn.inputs):
        return False
    for piece in eqn.inputs:
        maker = producers.get(id(piece))
        if maker is None or not maker.op.elementwise or isinstance(maker.op, Const) or id(piece) in outputs:
            return False
        if piece.shape[:-1] != eqn.out.shape[:-1]:
            return False
    return True
