"""`scan`: a recurrent cell applied along the leading (time) axis of its sequence inputs.

Inputs are `carries` (the state, e.g. h and c), `xs` (time-major sequences read one step at
a time) and `consts` (weights). The body maps (carries, x_t, consts) to (new carries, y_t);
the scan returns the final carries and each y stacked over time. With `reverse`, steps run
from last to first; y_t is still stored at position t.

Its gradient is backpropagation through time: a second scan running the other way whose
body is the vector-Jacobian product of the cell. Values of the forward cell that the
backward body needs become extra stacked outputs of the forward scan (its residuals), so
nothing costly is recomputed; a value made of one other and constants (a GRU's 1 - z) is
recomputed from that one instead of being stored too. Weight gradients that are sums over
steps of `matmul_tn` or `reduce_sum` terms are hoisted out of the loop: their per-step
operands are stacked and contracted once, as one large GEMM over time and batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kdsl.ir.ops.base import Op
from kdsl.ir.program import Builder, Eqn, Program, Var
from kdsl.ir.types import TensorType


def _stacked(var: Var, steps) -> TensorType:
    return TensorType(var.type.dtype, (steps, *var.shape))


class Scan(Op):
    name = "scan"
    single_output = False

    def infer(self, attrs, *types):
        body, nc, nx = attrs["body"], attrs["num_carry"], attrs["num_xs"]
        steps = types[nc].dims[0]
        expected = [v.type for v in body.inputs[:nc]] + [_stacked(v, steps) for v in body.inputs[nc : nc + nx]]
        expected += [v.type for v in body.inputs[nc + nx :]]
        if list(types) != expected:
            raise ValueError(f"scan: inputs {[str(t) for t in types]} do not fit its body {[str(t) for t in expected]}")
        return [v.type for v in body.outputs[:nc]] + [_stacked(v, steps) for v in body.outputs[nc:]]

    def reference(self, attrs, *arrays):
        from kdsl.backends.numpy_ref import run_program

        body, nc, nx = attrs["body"], attrs["num_carry"], attrs["num_xs"]
        carries, xs, consts = list(arrays[:nc]), arrays[nc : nc + nx], arrays[nc + nx :]
        steps = xs[0].shape[0]
        ys: list[list[np.ndarray]] = [[] for _ in body.outputs[nc:]]
        order = range(steps - 1, -1, -1) if attrs["reverse"] else range(steps)
        for t in order:
            outs = run_program(body, [*carries, *(x[t] for x in xs), *consts], attrs["symbols"])
            carries = outs[:nc]
            for stack, y in zip(ys, outs[nc:]):
                stack.append(y)
        if attrs["reverse"]:
            ys = [stack[::-1] for stack in ys]
        stacked = [np.stack(stack) for stack in ys]
        return [*carries, *stacked]

    def vjp(self, b, eqn, grads):
        return _BackwardScan(eqn).emit(b, grads)

    def cpu(self, em, eqn):
        em.scan(eqn)


@dataclass
class _BackwardScan:
    """Builds the backward scan of one forward scan equation (which gains residual outputs)."""

    forward: Eqn
    xs: list[tuple[Var, Var]] = field(default_factory=list)  # (body input, outer stacked value)
    consts: list[tuple[Var, Var]] = field(default_factory=list)

    def emit(self, b: Builder, grads: list[Var | None]) -> list[Var | None]:
        from kdsl.passes.autodiff import backprop

        eqn = self.forward
        body, nc, nx = eqn.attrs["body"], eqn.attrs["num_carry"], eqn.attrs["num_xs"]
        bb = Builder(origin=eqn.origin)
        d_carries = [bb.var(v.type, "d") for v in body.outputs[:nc]]
        seeds: dict[int, Var] = {}
        for v, d in zip(body.outputs, [*d_carries, *(None for _ in body.outputs[nc:])]):
            if d is not None:
                seeds[id(v)] = bb.add(seeds[id(v)], d) if id(v) in seeds else d
        for v, g in zip(body.outputs[nc:], grads[nc:]):
            if g is not None:
                d = bb.var(v.type, "d")
                self.xs.append((d, g))
                seeds[id(v)] = bb.add(seeds[id(v)], d) if id(v) in seeds else d
        body_grads = backprop(bb, body.eqns, seeds, body.inputs)
        d_inits = [g if g is not None else bb.broadcast_like(0.0, v) for g, v in zip(body_grads[:nc], body.inputs)]
        d_xs = body_grads[nc : nc + nx]

        accumulated, hoisted = [], []  # (const index, term)
        for k, g in enumerate(body_grads[nc + nx :]):
            for term in _terms(bb, g) if g is not None else []:
                maker = _hoistable(bb, term)
                (hoisted if maker else accumulated).append((k, _sum_of_concat(bb, maker) if maker else term))
        acc_in = [bb.var(body.inputs[nc + nx + k].type, "acc") for k, _ in accumulated]
        acc_out = [bb.add(acc, term) for acc, (_, term) in zip(acc_in, accumulated)]

        outputs = [*d_inits, *acc_out, *(g for g in d_xs if g is not None)]
        own = [*d_carries, *acc_in, *(v for v, _ in self.xs)]
        operands = [x for _, maker in hoisted for leaf in _leaves(bb, maker) for x in leaf.inputs]
        substitute = self._capture_free_vars(bb, body, own, outputs + operands)
        operands = [substitute.get(id(x), x) for x in operands]
        outputs = [substitute.get(id(x), x) for x in outputs]

        outer_of = {id(inner): outer for inner, outer in self.xs}
        new_ys = list({id(x): x for x in operands if id(x) not in outer_of}.values())
        back_body = Program(
            [*d_carries, *acc_in, *(v for v, _ in self.xs), *(v for v, _ in self.consts)], [*outputs, *new_ys], bb.eqns
        )
        zeros = [g if g is not None else b.broadcast_like(0.0, v) for g, v in zip(grads[:nc], eqn.outputs)]
        acc_init = [b.broadcast_like(0.0, eqn.inputs[nc + nx + k]) for k, _ in accumulated]
        outs = b.emit(
            eqn.op,
            [*zeros, *acc_init, *(o for _, o in self.xs), *(o for _, o in self.consts)],
            body=back_body,
            num_carry=nc + len(accumulated),
            num_xs=len(self.xs),
            reverse=not eqn.attrs["reverse"],
        )
        d_init_outer, acc_outer = outs[:nc], outs[nc : nc + len(accumulated)]
        rest = iter(outs[nc + len(accumulated) :])
        d_xs_outer = [next(rest) if g is not None else None for g in d_xs]
        outer_of.update({id(v): next(rest) for v in new_ys})

        d_consts: list[Var | None] = [None] * (len(eqn.inputs) - nc - nx)
        contributions = [(k, v) for (k, _), v in zip(accumulated, acc_outer)]

        def over_time(maker: Eqn) -> Var:
            """The sum over all steps of what `maker` computes for one step."""
            if maker.op.name == "concat":
                return b.concat(*(over_time(_producer(bb, x)) for x in maker.inputs), axis=maker.attrs["axis"])
            stacked = [outer_of[id(substitute.get(id(x), x))] for x in maker.inputs]
            if maker.op.name == "matmul_tn":
                return b.matmul_tn(*stacked)
            return b.reduce_sum(stacked[0], axes=(0, *(a + 1 for a in maker.attrs["axes"])))

        contributions += [(k, over_time(maker)) for k, maker in hoisted]
        for k, v in contributions:
            d_consts[k] = v if d_consts[k] is None else b.add(d_consts[k], v)
        return [*d_init_outer, *d_xs_outer, *d_consts]

    def _capture_free_vars(self, bb: Builder, body: Program, own: list[Var], needed: list[Var]) -> dict[int, Var]:
        """Route each forward value the backward body reads to it: a step of an input, a weight or a residual.

        Returns the substitution made, from forward values to the backward body's inputs.
        """
        eqn, nc, nx = self.forward, self.forward.attrs["num_carry"], self.forward.attrs["num_xs"]
        local = {id(v) for e in bb.eqns for v in e.outputs} | {id(v) for v in own}
        producers = body.producers()
        position = {id(v): i for i, v in enumerate(body.inputs)}
        steps = eqn.inputs[nc].shape[0]
        mapping: dict[int, Var] = {}
        constants: list[Eqn] = []
        recomputed: list[Eqn] = []
        wanted = [x for e in bb.eqns for x in e.inputs] + needed
        for var in wanted:  # grows as recomputed values ask for their operands
            if id(var) in local or id(var) in mapping:
                continue
            i = position.get(id(var))
            maker = producers.get(id(var))
            if maker is not None and _cheap_from_one(maker, producers):
                inner = bb.var(var.type, "r")
                recomputed.append(Eqn(maker.op, maker.inputs, (inner,), maker.attrs, eqn.origin))
                wanted += maker.inputs
            elif i is not None and i >= nc + nx:
                inner = bb.var(var.type, "w")
                self.consts.append((inner, eqn.inputs[i]))
            elif i is not None and i >= nc:
                inner = bb.var(var.type, "x")
                self.xs.append((inner, eqn.inputs[i]))
            elif maker is not None and maker.op.name == "const":
                inner = bb.var(var.type, "c")
                constants.append(Eqn(maker.op, (), (inner,), maker.attrs, eqn.origin))
            else:
                inner = bb.var(var.type, "r")
                body.outputs.append(var)
                residual = Var(_stacked(var, steps), f"res_{var.name}")
                eqn.outputs = (*eqn.outputs, residual)
                self.xs.append((inner, residual))
            mapping[id(var)] = inner
        bb.eqns[:0] = constants + recomputed[::-1]  # operands before the values made of them
        for e in bb.eqns:
            e.inputs = tuple(mapping.get(id(x), x) for x in e.inputs)
        return mapping


def _cheap_from_one(maker: Eqn, producers: dict[int, Eqn]) -> bool:
    """Whether the backward pass recomputes `maker`'s value instead of storing it at every step: an
    addition, subtraction, product or negation of one value and constants (a GRU's 1 - z). Storing
    that one value in its place never costs more, and the cell often needs it anyway (z)."""
    if maker.op.name not in ("add", "sub", "mul", "neg"):
        return False
    constant = [id(x) in producers and producers[id(x)].op.name == "const" for x in maker.inputs]
    values = [x for x, c in zip(maker.inputs, constant) if not c]
    return len(values) == 1 and values[0].shape == maker.out.shape


def _producer(bb: Builder, var: Var) -> Eqn | None:
    return next((e for e in bb.eqns if any(v is var for v in e.outputs)), None)


def _hoistable(bb: Builder, var: Var) -> Eqn | None:
    """The equation making `var` if its sum over steps can be computed after the loop.

    That is a `matmul_tn` or a batch-summing `reduce_sum` of per-step values (then the sum over
    steps is the same op over the stacked values), or a concat of such.
    """
    maker = _producer(bb, var)
    if maker is None:
        return None
    if maker.op.name == "matmul_tn":
        return maker
    if maker.op.name == "reduce_sum" and not maker.attrs.get("keepdims") and 0 in maker.attrs["axes"]:
        return maker
    if maker.op.name == "concat" and all(_hoistable(bb, x) for x in maker.inputs):
        return maker
    return None


def _sum_of_concat(bb: Builder, maker: Eqn) -> Eqn:
    """A concat of row sums of pieces, as the row sum of the pieces' concat.

    A cell's bias gradient is the concat of its gates' row sums; summed after the loop, it would
    stack every gate's gradient apart. As one sum over the concat of the gates' gradients (which
    the weight gradient already stacks), the pieces never reach memory on their own.
    """
    if maker.op.name != "concat":
        return maker
    leaves = [_producer(bb, x) for x in maker.inputs]
    if not all(leaf is not None and leaf.op.name == "reduce_sum" for leaf in leaves):
        return maker
    pieces = [leaf.inputs[0] for leaf in leaves]
    axes, last = leaves[0].attrs["axes"], pieces[0].rank - 1
    alike = all(
        leaf.attrs == leaves[0].attrs and p.shape[:-1] == pieces[0].shape[:-1] for leaf, p in zip(leaves, pieces)
    )
    if not alike or last in axes:
        return maker
    total = bb.reduce_sum(bb.concat(*pieces, axis=last), axes=axes)
    return _producer(bb, total)


def _leaves(bb: Builder, maker: Eqn) -> list[Eqn]:
    if maker.op.name == "concat":
        return [leaf for x in maker.inputs for leaf in _leaves(bb, _producer(bb, x))]
    return [maker]


def _terms(bb: Builder, var: Var) -> list[Var]:
    """`var` as a list of summands, looking through the additions that accumulated it."""
    maker = _producer(bb, var)
    if maker is not None and maker.op.name == "add" and maker.inputs[0].shape == maker.inputs[1].shape == var.shape:
        return [t for x in maker.inputs for t in _terms(bb, x)]
    return [var]


OPS = [Scan()]
