"""Backpropagation through time: autodiff's rule for `scan`.

The gradient of a scan is a second scan running the other way whose body is the
vector-Jacobian product of the cell (differentiated by the `backprop` it is given). Values of
the forward cell that the backward body needs become extra stacked outputs of the forward scan
(its residuals), so nothing costly is recomputed; a value made of one other and constants (a
GRU's 1 - z) is recomputed from that one instead of being stored too. Weight gradients that are
sums over steps of `matmul_tn` or `reduce_sum` terms are hoisted out of the loop: their per-step
operands are stacked and contracted once, as one large GEMM over time and batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from kdsl.ir.builder import Builder
from kdsl.ir.ops.elementwise import ADD, MUL, NEG, SUB, Const
from kdsl.ir.ops.linalg import MatMulTN
from kdsl.ir.ops.reduce import ReduceSum
from kdsl.ir.ops.scan import stacked_type
from kdsl.ir.ops.shape import Concat
from kdsl.ir.program import Eqn, Program, Var

# autodiff's entry point: gradients of `wrt` given seeds, appending to the builder
Backprop = Callable[[Builder, Sequence[Eqn], dict[int, Var], Sequence[Var]], list["Var | None"]]


def backward_scan(b: Builder, eqn: Eqn, grads: list[Var | None], backprop: Backprop) -> list[Var | None]:
    """The gradients of a scan equation's inputs, given its outputs'; `eqn` gains the residual outputs the
    backward scan reads."""
    return _BackwardScan(eqn).emit(b, grads, backprop)


@dataclass
class _BackwardScan:
    """Builds the backward scan of one forward scan equation (which gains residual outputs)."""

    forward: Eqn
    xs: list[tuple[Var, Var]] = field(default_factory=list)  # (body input, outer stacked value)
    consts: list[tuple[Var, Var]] = field(default_factory=list)

    def emit(self, b: Builder, grads: list[Var | None], backprop: Backprop) -> list[Var | None]:
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
            if isinstance(maker.op, Concat):
                return b.concat(*(over_time(_producer(bb, x)) for x in maker.inputs), axis=maker.attrs["axis"])
            stacked = [outer_of[id(substitute.get(id(x), x))] for x in maker.inputs]
            if isinstance(maker.op, MatMulTN):
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
            elif maker is not None and isinstance(maker.op, Const):
                inner = bb.var(var.type, "c")
                constants.append(Eqn(maker.op, (), (inner,), maker.attrs, eqn.origin))
            else:
                inner = bb.var(var.type, "r")
                body.outputs.append(var)
                residual = Var(stacked_type(var, steps), f"res_{var.name}")
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
    if maker.op not in (ADD, SUB, MUL, NEG):
        return False
    constant = [id(x) in producers and isinstance(producers[id(x)].op, Const) for x in maker.inputs]
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
    if isinstance(maker.op, MatMulTN):
        return maker
    if isinstance(maker.op, ReduceSum) and not maker.attrs.get("keepdims") and 0 in maker.attrs["axes"]:
        return maker
    if isinstance(maker.op, Concat) and all(_hoistable(bb, x) for x in maker.inputs):
        return maker
    return None


def _sum_of_concat(bb: Builder, maker: Eqn) -> Eqn:
    """A concat of row sums of pieces, as the row sum of the pieces' concat.

    A cell's bias gradient is the concat of its gates' row sums; summed after the loop, it would
    stack every gate's gradient apart. As one sum over the concat of the gates' gradients (which
    the weight gradient already stacks), the pieces never reach memory on their own.
    """
    if not isinstance(maker.op, Concat):
        return maker
    leaves = [_producer(bb, x) for x in maker.inputs]
    if not all(leaf is not None and isinstance(leaf.op, ReduceSum) for leaf in leaves):
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
    if isinstance(maker.op, Concat):
        return [leaf for x in maker.inputs for leaf in _leaves(bb, _producer(bb, x))]
    return [maker]


def _terms(bb: Builder, var: Var) -> list[Var]:
    """`var` as a list of summands, looking through the additions that accumulated it."""
    maker = _producer(bb, var)
    if maker is not None and maker.op is ADD and maker.inputs[0].shape == maker.inputs[1].shape == var.shape:
        return [t for x in maker.inputs for t in _terms(bb, x)]
    return [var]
