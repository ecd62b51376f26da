"""Reductions and row-wise ops: sums, counts, softmax, and softmax fused with cross-entropy."""

from __future__ import annotations

import numpy as np

from kdsl.ir.ops.base import Op
from kdsl.ir.types import TensorType


class ReduceSum(Op):
    name = "reduce_sum"

    def infer(self, attrs, x):
        axes, keep = attrs["axes"], attrs.get("keepdims", False)
        dims = (
            [1 if i in axes else d for i, d in enumerate(x.dims)]
            if keep
            else [d for i, d in enumerate(x.dims) if i not in axes]
        )
        return [TensorType(x.dtype, tuple(dims))]

    def reference(self, attrs, x):
        total = np.sum(x, axis=tuple(attrs["axes"]), keepdims=attrs.get("keepdims", False), dtype=np.float64)
        return [np.asarray(total, x.dtype)]

    def vjp(self, b, eqn, grads):
        (x,), (g,) = eqn.inputs, grads
        if not eqn.attrs.get("keepdims", False) and g.rank:
            g = b.reshape(g, shape=tuple(1 if a in eqn.attrs["axes"] else d for a, d in enumerate(x.shape)))
        return [b.broadcast_like(g, x)]

    def cpu(self, em, eqn):
        (x,), y = eqn.inputs, eqn.out
        axes, keep = eqn.attrs["axes"], eqn.attrs.get("keepdims", False)
        total = em.fresh("total") if y.rank == 0 else None  # a full sum accumulates in a register
        if total:
            em.line(f"{total} = np.float32(0.0)")
        else:
            em.line(f"{em.ref(y)}[...] = np.float32(0.0)")
        with em.loops(x) as idx:
            if keep:
                out_idx = ["0" if a in axes else i for a, i in enumerate(idx)]
            else:
                out_idx = [i for a, i in enumerate(idx) if a not in axes]
            target = total or f"{em.ref(y)}[{', '.join(out_idx)}]"
            em.line(f"{target} += {em.ref(x)}[{', '.join(idx)}]")
        if total:
            em.line(f"{em.ref(y)} = {total}")


class Count(Op):
    """The number of elements of `x` along `axes`, as a float32 scalar (a mean's divisor)."""

    name = "count"
    differentiable = False

    def infer(self, attrs, x):
        return [TensorType("f32", ())]

    def reference(self, attrs, x):
        return [np.float32(np.prod([x.shape[a] for a in attrs["axes"]]))]

    def cpu(self, em, eqn):
        dims = " * ".join(f"{em.ref(eqn.inputs[0])}.shape[{a}]" for a in eqn.attrs["axes"])
        em.bind(eqn.out, f"np.float32({dims or 1})")


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def row_softmax_lines(w, x_at, y_at, n: str, zero: str, log: bool) -> None:
    """Loop code for (log-)softmax over one row of `n` elements, through the writer `w` (CPU or CUDA).

    `x_at(j)` and `y_at(j)` spell element `j` of the input and output rows; `zero` a float32 zero.
    """
    j, top, total = w.fresh("j"), w.fresh("top"), w.fresh("total")
    X, Y = x_at(j), y_at(j)
    w.line(f"{top} = {x_at('0')}")
    with w.block(f"for {j} in range(1, {n}):"):
        w.line(f"{top} = max({top}, {X})")
    w.line(f"{total} = {zero}")
    with w.block(f"for {j} in range({n}):"):
        if log:
            w.line(f"{total} += math.exp({X} - {top})")
        else:
            w.line(f"{Y} = math.exp({X} - {top})")
            w.line(f"{total} += {Y}")
    if log:
        w.line(f"{total} = {top} + math.log({total})")
    with w.block(f"for {j} in range({n}):"):
        w.line(f"{Y} = {X} - {total}" if log else f"{Y} = {Y} / {total}")


def softmax_cross_entropy_lines(w, logits_at, probs_at, labels_at, loss, label, n: str, zero: str) -> None:
    """Loop code for one row's softmax probabilities and crossentropy, through the writer `w` (CPU or CUDA).

    `label` spells the class id of a sparse row (None: the labels are a row of probabilities, read by
    `labels_at`); `loss` spells the row's loss element. The log-probabilities are kept in the
    probabilities' row until the last loop, so the loss of a sparse row is one read.
    """
    row_softmax_lines(w, logits_at, probs_at, n, zero, log=True)
    j, total = w.fresh("j"), w.fresh("total")
    if label is not None:
        w.line(f"{loss} = -{probs_at(label)}")
    else:
        w.line(f"{total} = {zero}")
        with w.block(f"for {j} in range({n}):"):
            w.line(f"{total} -= {labels_at(j)} * {probs_at(j)}")
        w.line(f"{loss} = {total}")
    with w.block(f"for {j} in range({n}):"):
        w.line(f"{probs_at(j)} = math.exp({probs_at(j)})")


def _emit_row_softmax(em, x, y, idx, log: bool) -> None:
    """Numba loop body computing (log-)softmax over the last axis of one row."""
    row = "".join(f"{i}, " for i in idx)
    x_at, y_at = (lambda j: f"{em.ref(x)}[{row}{j}]"), (lambda j: f"{em.ref(y)}[{row}{j}]")
    row_softmax_lines(em, x_at, y_at, f"{em.ref(x)}.shape[-1]", "np.float32(0.0)", log)


class Softmax(Op):
    name = "softmax"

    def infer(self, attrs, x):
        return [x]

    def reference(self, attrs, x):
        return [_softmax(x.astype(np.float64)).astype(x.dtype)]

    def vjp(self, b, eqn, grads):
        y, (g,) = eqn.out, grads
        return [b.mul(y, b.sub(g, b.reduce_sum(b.mul(g, y), axes=(y.rank - 1,), keepdims=True)))]

    def cpu(self, em, eqn):
        with em.loops(eqn.out, skip_last=True) as idx:
            _emit_row_softmax(em, eqn.inputs[0], eqn.out, idx, log=False)


class LogSoftmax(Op):
    name = "log_softmax"

    def infer(self, attrs, x):
        return [x]

    def reference(self, attrs, x):
        x64 = x.astype(np.float64)
        shifted = x64 - x64.max(axis=-1, keepdims=True)
        return [(shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))).astype(x.dtype)]

    def vjp(self, b, eqn, grads):
        y, (g,) = eqn.out, grads
        return [b.sub(g, b.mul(b.exp(y), b.reduce_sum(g, axes=(y.rank - 1,), keepdims=True)))]

    def cpu(self, em, eqn):
        with em.loops(eqn.out, skip_last=True) as idx:
            _emit_row_softmax(em, eqn.inputs[0], eqn.out, idx, log=True)


class SoftmaxCrossEntropy(Op):
    """(probs, loss) from logits and labels in one pass; its gradient is simply probs - labels.

    Labels are class ids (`sparse`) or probability rows. The fusion keeps training numerically
    exact where a separate softmax then log would lose the small probabilities.
    """

    name = "softmax_cross_entropy"
    single_output = False

    def infer(self, attrs, logits, labels):
        return [logits, TensorType("f32", logits.dims[:-1])]

    def reference(self, attrs, logits, labels):
        x = logits.astype(np.float64)
        logp = x - x.max(-1, keepdims=True)
        logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
        if attrs["sparse"]:
            loss = -np.take_along_axis(logp, labels[..., None].astype(np.int64), -1)[..., 0]
        else:
            loss = -(labels * logp).sum(-1)
        return [np.exp(logp).astype(logits.dtype), loss.astype(logits.dtype)]

    def vjp(self, b, eqn, grads):
        (_, labels), (_, g) = eqn.inputs, grads
        probs = eqn.outputs[0]
        return [b.softmax_cross_entropy_grad(probs, labels, g, sparse=eqn.attrs["sparse"]), None]

    def cpu(self, em, eqn):
        (logits, labels), (probs, loss) = eqn.inputs, eqn.outputs
        with em.loops(loss) as idx:
            row = "".join(f"{i}, " for i in idx)
            at = lambda var: lambda j: f"{em.ref(var)}[{row}{j}]"  # noqa: E731
            label = em.index(labels, idx) if eqn.attrs["sparse"] else None
            n = f"{em.ref(logits)}.shape[-1]"
            softmax_cross_entropy_lines(
                em, at(logits), at(probs), at(labels), em.index(loss, idx), label, n, "np.float32(0.0)"
            )


class SoftmaxCrossEntropyGrad(Op):
    """d loss / d logits = (probs·Σlabels - labels)·g, labels as ids (`sparse`) or rows (Σ = 1 for ids)."""

    name = "softmax_cross_entropy_grad"

    def infer(self, attrs, probs, labels, g):
        return [probs]

    def reference(self, attrs, probs, labels, g):
        target = np.eye(probs.shape[-1], dtype=np.float32)[labels] if attrs["sparse"] else labels
        mass = target.sum(-1, keepdims=True)
        return [((probs * mass - target) * g[..., None]).astype(probs.dtype)]

    def cpu(self, em, eqn):
        (probs, labels, g), dx = eqn.inputs, eqn.out
        with em.loops(g) as idx:
            row = ", ".join(idx) + (", " if idx else "")
            j = em.fresh("j")
            with em.block(f"for {j} in range({em.ref(probs)}.shape[-1]):"):
                em.line(f"{em.ref(dx)}[{row}{j}] = {em.ref(probs)}[{row}{j}] * {em.index(g, idx)}")
            if eqn.attrs["sparse"]:
                em.line(f"{em.ref(dx)}[{row}{em.index(labels, idx)}] -= {em.index(g, idx)}")
            else:
                mass = em.fresh("mass")
                em.line(f"{mass} = np.float32(0.0)")
                with em.block(f"for {j} in range({em.ref(probs)}.shape[-1]):"):
                    em.line(f"{mass} += {em.ref(labels)}[{row}{j}]")
                with em.block(f"for {j} in range({em.ref(probs)}.shape[-1]):"):
                    target, label = f"{em.ref(dx)}[{row}{j}]", f"{em.ref(labels)}[{row}{j}]"
                    em.line(f"{target} = {target} * {mass} - {label} * {em.index(g, idx)}")


OPS = [ReduceSum(), Count(), Softmax(), LogSoftmax(), SoftmaxCrossEntropy(), SoftmaxCrossEntropyGrad()]
