"""What a time loop's step computes from its inputs alone, computed for every step at once before the loop.

A cell written plainly computes from the step's input what does not depend on the state: `dense(x, units)`, or
x's part of `dense(concatenate(x, h), units)`, which is x·W_x + h·W_h. Inside the loop each is a small product
per step on the sequential path; before it, one product over all steps (time × batch rows), as the built-in
layers' input projection is. A product of a concatenation of step inputs and states is first split into one
product per piece, the weight split to match (its gradient is the pieces' joined again).

The pass runs on the forward program, before autodiff, so that backpropagation through time differentiates the
hoisted form; a hoisted value enters the loop as one more sequence it reads a step of.
"""

from __future__ import annotations

from kdsl.ir.builder import Builder
from kdsl.ir.ops import OPS
from kdsl.ir.ops.linalg import MatMul
from kdsl.ir.ops.scan import Scan
from kdsl.ir.ops.shape import Concat, Split
from kdsl.ir.program import Eqn, Program, Var
from kdsl.passes.dce import dce

STATE, STEP, FIXED = "state", "step", "fixed"  # depends on the carried state; on the step's inputs alone; on neither


def hoist_step_independent(program: Program) -> Program:
    """Rewrite `program`'s scans in place; the hoisted work goes just before each."""
    eqns: list[Eqn] = []
    for eqn in program.eqns:
        eqns.append(_hoisted(Builder(eqn.origin, eqns), eqn) if isinstance(eqn.op, Scan) else eqn)
    program.eqns = eqns
    return program


def _hoisted(b: Builder, scan: Eqn) -> Eqn:
    """`scan`, reading the step-independent products its body made (emitted to `b`) as sequences."""
    body, nc, nx = scan.attrs["body"], scan.attrs["num_carry"], scan.attrs["num_xs"]
    outer = {id(v): x for v, x in zip(body.inputs, scan.inputs)}
    kinds = _kinds(body.inputs, nc, nx, body.eqns)
    fixed_inputs: list[Var] = []  # new weights of the body: pieces of split weights
    eqns = _split_concatenated_products(b, body.eqns, kinds, outer, fixed_inputs)
    kinds = _kinds([*body.inputs, *fixed_inputs], nc, nx, eqns)
    hoisted = _worth_hoisting(eqns, kinds, body.outputs)
    if not hoisted:
        return scan
    producers = {id(v): eqn for eqn in eqns for v in eqn.outputs}
    sequences = [_outside(b, v, producers, kinds, outer) for v in hoisted]
    carries, xs, weights = body.inputs[:nc], body.inputs[nc : nc + nx], body.inputs[nc + nx :]
    moved = {id(v) for v in hoisted}
    new_body = dce(
        Program(
            [*carries, *xs, *hoisted, *weights, *fixed_inputs],
            list(body.outputs),
            [eqn for eqn in eqns if not any(id(v) in moved for v in eqn.outputs)],
        )
    )
    inputs = (*scan.inputs[: nc + nx], *sequences, *scan.inputs[nc + nx :], *(outer[id(v)] for v in fixed_inputs))
    attrs = {**scan.attrs, "body": new_body, "num_xs": nx + len(sequences)}
    scan.op.infer(attrs, *(x.type for x in inputs))  # the new loop fits its body
    return Eqn(scan.op, inputs, scan.outputs, attrs, scan.origin)


def _kinds(inputs: list[Var], nc: int, nx: int, eqns: list[Eqn]) -> dict[int, str]:
    """What each value of a body depends on; a value of the step's inputs that cannot be computed for every step
    at once (an op whose axes would shift) counts as the state's, and stays in the loop."""
    kinds = {id(v): STATE if k < nc else STEP if k < nc + nx else FIXED for k, v in enumerate(inputs)}
    for eqn in eqns:
        read = {kinds[id(x)] for x in eqn.inputs}
        if STATE in read or (STEP in read and not _over_all_steps(eqn, kinds)):
            kind = STATE
        else:
            kind = STEP if STEP in read else FIXED
        kinds.update((id(v), kind) for v in eqn.outputs)
    return kinds


def _over_all_steps(eqn: Eqn, kinds: dict[int, str]) -> bool:
    """Whether `eqn` computes the same with a leading time axis on its step values."""
    steps = [kinds[id(x)] == STEP for x in eqn.inputs]
    if eqn.op.elementwise:
        return all(x.rank == eqn.out.rank for x, step in zip(eqn.inputs, steps) if step)
    if isinstance(eqn.op, MatMul):
        return steps == [True, False]
    if isinstance(eqn.op, Concat | Split):
        return all(steps) and eqn.attrs["axis"] == eqn.inputs[0].rank - 1
    return False


def _split_concatenated_products(
    b: Builder, eqns: list[Eqn], kinds: dict[int, str], outer: dict[int, Var], fixed_inputs: list[Var]
) -> list[Eqn]:
    """The body's equations, each product of a concatenation of step values and states by a weight of the body
    split into one product per piece, summed; the weight's pieces are split from it before the loop (to `b`)
    and become new weights of the body (`fixed_inputs`, with `outer` telling their values outside)."""
    producers = {id(v): eqn for eqn in eqns for v in eqn.outputs}
    split: list[Eqn] = []
    for eqn in eqns:
        product = isinstance(eqn.op, MatMul)
        joined = producers.get(id(eqn.inputs[0])) if product else None
        weight = eqn.inputs[1] if product else None
        mixed = (
            joined is not None
            and isinstance(joined.op, Concat)
            and joined.attrs["axis"] == joined.out.rank - 1
            and {kinds[id(x)] for x in joined.inputs} >= {STEP, STATE}
        )
        if not (mixed and not eqn.attrs.get("transpose_b") and id(weight) in outer):
            split.append(eqn)
            continue
        sizes = tuple(x.shape[-1] for x in joined.inputs)
        pieces = []
        for piece in b.split(outer[id(weight)], sizes=sizes, axis=0):
            inner = Var(piece.type, f"{weight.name}_piece")
            outer[id(inner)] = piece
            fixed_inputs.append(inner)
            pieces.append(inner)
        inside = Builder(eqn.origin, split)
        products = [inside.matmul(x, w) for x, w in zip(joined.inputs, pieces)]
        total = products[0]
        for product in products[1:-1]:
            total = inside.add(total, product)
        split.append(Eqn(OPS["add"], (total, products[-1]), eqn.outputs, {}, eqn.origin))
    return split


def _worth_hoisting(eqns: list[Eqn], kinds: dict[int, str], outputs: list[Var]) -> list[Var]:
    """The step values with a product in their making that the loop's state-dependent work reads."""
    costly: set[int] = set()
    for eqn in eqns:
        made_here = isinstance(eqn.op, MatMul) or any(id(x) in costly for x in eqn.inputs)
        if kinds[id(eqn.outputs[0])] == STEP and made_here:
            costly.update(id(v) for v in eqn.outputs)
    results = {id(v) for v in outputs}
    hoisted: dict[int, Var] = {}
    for eqn in eqns:
        if kinds[id(eqn.outputs[0])] == STATE:
            for x in eqn.inputs:
                if id(x) in costly and id(x) not in results:
                    hoisted[id(x)] = x
    return list(hoisted.values())


def _outside(b: Builder, var: Var, producers: dict[int, Eqn], kinds: dict[int, str], outer: dict[int, Var]) -> Var:
    """`var` computed before the loop, for every step at once (step values gain a leading time axis)."""
    if id(var) in outer:
        return outer[id(var)]
    eqn = producers[id(var)]
    inputs = [_outside(b, x, producers, kinds, outer) for x in eqn.inputs]
    attrs = dict(eqn.attrs)
    if kinds[id(var)] == STEP and isinstance(eqn.op, Concat | Split):
        attrs["axis"] += 1
    for inner, value in zip(eqn.outputs, b.emit(eqn.op, inputs, **attrs)):
        outer[id(inner)] = value
    return outer[id(var)]
