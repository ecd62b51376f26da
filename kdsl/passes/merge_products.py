"""Products of one value by several weights in a time loop's step, made one product by the weights joined.

A cell written gate by gate (`dense(h, units)` for each of LSTM's four gates) multiplies the state by four
weights at every step; the built-in LSTM multiplies it once, by the four side by side. Joined before the loop
(their gradients split apart again), the weights make one wider product per step, and each gate reads its
columns of it.
"""

from __future__ import annotations

from kdsl.ir.builder import Builder
from kdsl.ir.ops import OPS
from kdsl.ir.ops.linalg import MatMul
from kdsl.ir.program import Eqn, Program, Var
from kdsl.passes.scan_rewrites import rebuilt, rewrite_scans


def merge_products(program: Program) -> Program:
    """Rewrite `program`'s scans in place; the joined weights are made just before each."""
    return rewrite_scans(program, _merged)


def _merged(b: Builder, scan: Eqn) -> Eqn:
    """`scan` with each group of products of one value by weights of the loop made one (the weights joined, to
    `b`)."""
    body, nc, nx = scan.attrs["body"], scan.attrs["num_carry"], scan.attrs["num_xs"]
    outer = {id(v): x for v, x in list(zip(body.inputs, scan.inputs))[nc + nx :]}  # the loop's weights
    groups: dict[int, list[Eqn]] = {}
    for eqn in body.eqns:
        if isinstance(eqn.op, MatMul) and not eqn.attrs.get("transpose_b") and id(eqn.inputs[1]) in outer:
            groups.setdefault(id(eqn.inputs[0]), []).append(eqn)
    groups = {key: group for key, group in groups.items() if len(group) > 1}
    if not groups:
        return scan
    first = {id(group[0]): group for group in groups.values()}
    merged = {id(eqn) for group in groups.values() for eqn in group}
    joined_inputs: list[Var] = []  # the joined weights, inside the loop and before it
    joined_outer: list[Var] = []
    eqns: list[Eqn] = []
    for eqn in body.eqns:
        if id(eqn) in first:
            group = first[id(eqn)]
            joined_outer.append(b.concat(*(outer[id(e.inputs[1])] for e in group), axis=1))
            weight = Var(joined_outer[-1].type, "joined")
            joined_inputs.append(weight)
            inside = Builder(eqn.origin, eqns)
            product = inside.matmul(eqn.inputs[0], weight)
            sizes = tuple(e.out.shape[-1] for e in group)
            outputs = tuple(e.out for e in group)
            eqns.append(Eqn(OPS["split"], (product,), outputs, {"sizes": sizes, "axis": product.rank - 1}, eqn.origin))
        elif id(eqn) not in merged:
            eqns.append(eqn)
    new_body = Program([*body.inputs, *joined_inputs], list(body.outputs), eqns)
    return rebuilt(scan, (*scan.inputs, *joined_outer), {**scan.attrs, "body": new_body})
