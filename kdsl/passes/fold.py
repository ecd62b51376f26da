"""Folding an embedding into the product that reads it.

An embedding feeding a recurrent layer is a gather, often a transpose to time-major, and
the input projection of every token: a (tokens × D)·(D × N) product. Rows of the projected
table, (vocabulary × D)·(D × N), picked by the same ids, are the same values, and cost less
whenever a batch holds more tokens than the table has rows. `gather_matmul` makes that
choice when it runs.

The pass runs on finished programs (after autodiff), and only where the gathered rows feed
nothing but the product (and `fill`s, which read only the batch size from them): a training
step also reads them for the kernel's gradient, so it keeps them.
"""

from __future__ import annotations

from kdsl.ir.ops import OPS
from kdsl.ir.program import Eqn, Program


def fold_gather_projections(program: Program) -> Program:
    """`program` with each gather (and transpose) read only by a `matmul` replaced by one `gather_matmul`."""
    producers, uses = program.producers(), program.uses()
    results = {id(v) for v in program.outputs}

    def readers(var) -> list[Eqn] | None:
        return None if id(var) in results else uses.get(id(var), [])

    replaced: dict[int, Eqn] = {}  # equation -> its replacement
    dropped: set[int] = set()  # the gathers and transposes folded away
    for eqn in program.eqns:
        if eqn.op.name != "matmul" or eqn.attrs.get("transpose_b"):
            continue
        rows, reader, chain = eqn.inputs[0], eqn, []
        maker = producers.get(id(rows))
        perm = tuple(range(rows.rank - 1))
        if maker is not None and maker.op.name == "transpose" and maker.attrs["perm"][-1] == rows.rank - 1:
            if readers(rows) != [eqn]:
                continue
            perm, chain, reader = tuple(maker.attrs["perm"][:-1]), [maker], maker
            rows = maker.inputs[0]
            maker = producers.get(id(rows))
        if maker is None or maker.op.name != "gather" or readers(rows) is None:
            continue
        table, ids = maker.inputs
        # fills read only leading sizes, which the ids have too
        fills = [e for e in readers(rows) if e.op.name == "fill" and e.attrs["lead"] <= ids.rank]
        if [e for e in readers(rows) if e not in fills] != [reader]:
            continue
        for fill in fills:
            replaced[id(fill)] = Eqn(fill.op, (ids,), fill.outputs, fill.attrs, fill.origin)
        attrs = {"perm": perm}
        replaced[id(eqn)] = Eqn(OPS["gather_matmul"], (table, ids, eqn.inputs[1]), eqn.outputs, attrs, eqn.origin)
        dropped.update(id(e) for e in [maker, *chain])
    eqns = [replaced.get(id(e), e) for e in program.eqns if id(e) not in dropped]
    return Program(program.inputs, program.outputs, eqns)
