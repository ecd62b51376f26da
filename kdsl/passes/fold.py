"""Folding an embedding into the product that reads it.

An embedding feeding a recurrent layer is a gather, often a transpose to time-major, and
the input projection of every token: a (tokens × D)·(D × N) product. Rows of the projected
table, (vocabulary × D)·(D × N), picked by the same ids, are the same values, and cost less
whenever a batch holds more tokens than the table has rows. `gather_matmul` makes that
choice when it runs.

In a training step the gathered rows are read once more, for the kernel's gradient, and the
table's gradient sums g·Wᵀ by id. Both gradients come from the projection's gradient g
summed by id, a table-sized matrix, as `gather_matmul_grads` computes them; the rows are then
never gathered at all (a W4 step at batch 64: 3,200 token rows against a table of 1,000).

A folded projection that only a time loop's cell reads, element by element, is not gathered
either when the table is projected: the loop reads each step's rows straight from the
projected table (`in_loop`), which stays in cache, where the gathered sequence would go out
to memory and back (52 MB for W3 at batch 256).

The pass runs on finished programs (after autodiff), and only where the gathered rows feed
nothing but these products (and `fill`s, which read only the batch size from them).
"""

from __future__ import annotations

from kdsl.ir.ops import OPS
from kdsl.ir.ops.linalg import MatMul, MatMulTN
from kdsl.ir.ops.scan import Scan
from kdsl.ir.ops.shape import Fill, Gather, GatherGrad, Split, Transpose
from kdsl.ir.program import Eqn, Program, Var


def fold_gather_projections(program: Program) -> Program:
    """`program` with each gather (and transpose) read only by a `matmul` replaced by one `gather_matmul`,
    and in a training step, the gradients of both by one `gather_matmul_grads`."""
    producers, uses = program.producers(), program.uses()
    results = {id(v) for v in program.outputs}
    position = {id(e): k for k, e in enumerate(program.eqns)}

    def readers(var: Var) -> list[Eqn] | None:
        return None if id(var) in results else uses.get(id(var), [])

    replaced: dict[int, Eqn] = {}  # equation -> its replacement
    dropped: set[int] = set()  # the equations folded away
    for eqn in program.eqns:
        if not isinstance(eqn.op, MatMul) or eqn.attrs.get("transpose_b"):
            continue
        (x, w), perm = eqn.inputs, tuple(range(eqn.inputs[0].rank - 1))
        rows, chain, maker = x, [], producers.get(id(x))
        if maker is not None and isinstance(maker.op, Transpose) and maker.attrs["perm"][-1] == x.rank - 1:
            perm, chain, rows = tuple(maker.attrs["perm"][:-1]), [maker], maker.inputs[0]
            maker = producers.get(id(rows))
        if maker is None or not isinstance(maker.op, Gather) or readers(rows) is None or readers(x) is None:
            continue
        table, ids = maker.inputs
        backward = _gradient_chain(x, w, table, ids, readers)
        products = {id(eqn)} | ({id(backward[0])} if backward else set())
        # fills read only leading sizes, which the ids have too
        fills = [e for e in readers(rows) if isinstance(e.op, Fill) and e.attrs["lead"] <= ids.rank]
        others = {id(e) for e in readers(rows) if e not in fills}
        if others != ({id(chain[0])} if chain else products) or (chain and {id(e) for e in readers(x)} != products):
            continue
        for fill in fills:
            replaced[id(fill)] = Eqn(fill.op, (ids,), fill.outputs, fill.attrs, fill.origin)
        attrs = {"perm": perm}
        loop = {"in_loop": True} if _read_in_loop(eqn.out, readers(eqn.out)) else {}
        replaced[id(eqn)] = Eqn(OPS["gather_matmul"], (table, ids, w), eqn.outputs, attrs | loop, eqn.origin)
        dropped.update(id(e) for e in [maker, *chain])
        if backward:
            tn, g, folded = backward
            first = min(folded, key=lambda e: position[id(e)])
            outputs = (tn.out, folded[-1].out)
            replaced[id(first)] = Eqn(OPS["gather_matmul_grads"], (table, ids, w, g), outputs, attrs, tn.origin)
            dropped.update(id(e) for e in folded if e is not first)
    eqns = [replaced.get(id(e), e) for e in program.eqns if id(e) not in dropped]
    return Program(program.inputs, program.outputs, eqns)


def _gradient_chain(x: Var, w: Var, table: Var, ids: Var, readers) -> tuple[Eqn, Var, list[Eqn]] | None:
    """In a training step: (the kernel's gradient xᵀ·g, g, every equation from there to the table's gradient).

    That is matmul_tn(x, g), matmul(g, w, transpose_b), a transpose back when x was one, and the
    gather's gradient of the table; None when the program does not hold exactly that.
    """
    tn = next((e for e in readers(x) if isinstance(e.op, MatMulTN) and e.inputs[0] is x), None)
    if tn is None or readers(tn.inputs[1]) is None:
        return None
    g = tn.inputs[1]
    back = next(
        (e for e in readers(g) if isinstance(e.op, MatMul) and e.inputs == (g, w) and e.attrs.get("transpose_b")), None
    )
    chain = [tn, back]
    while back is not None and len(readers(back.out) or []) == 1:
        back = readers(back.out)[0]
        chain.append(back)
        if isinstance(back.op, GatherGrad):
            return (tn, g, chain) if back.inputs[1:] == (ids, table) else None
        if not isinstance(back.op, Transpose):
            return None
    return None


def _read_in_loop(projection: Var, readers: list[Eqn] | None) -> bool:
    """Whether `projection` is a sequence input of one time loop, whose cell reads it only element by
    element: in fused loops, directly or through pieces split off its last axis."""
    if not readers or len(readers) != 1 or not isinstance(readers[0].op, Scan):
        return False
    scan = readers[0]
    body, nc, nx = scan.attrs["body"], scan.attrs["num_carry"], scan.attrs["num_xs"]
    positions = [k for k, x in enumerate(scan.inputs) if x is projection]
    if len(positions) != 1 or not nc <= positions[0] < nc + nx:
        return False
    step = body.inputs[positions[0]]
    pieces = [step]
    for eqn in body.eqns:
        if any(x is step for x in eqn.inputs) and isinstance(eqn.op, Split) and eqn.attrs["axis"] == step.rank - 1:
            pieces += eqn.outputs
        elif any(x is p for x in eqn.inputs for p in pieces) and not eqn.op.elementwise:
            return False
    return not any(y is p for y in body.outputs for p in pieces)
