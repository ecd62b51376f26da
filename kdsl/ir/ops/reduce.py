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


class Count(Op):
    """The number of elements of `x` along `axes`, as a float32 scalar (a mean's divisor)."""

    name = "count"
    differentiable = False
    sizes_only = True

    def infer(self, attrs, x):
        return [TensorType("f32", ())]

    def reference(self, attrs, x):
        return [np.float32(np.prod([x.shape[a] for a in attrs["axes"]]))]


def _softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Softmax(Op):
    name = "softmax"

    def infer(self, attrs, x):
        return [x]

    def reference(self, attrs, x):
        return [_softmax(x.astype(np.float64)).astype(x.dtype)]

    def vjp(self, b, eqn, grads):
        y, (g,) = eqn.out, grads
        return [b.mul(y, b.sub(g, b.reduce_sum(b.mul(g, y), axes=(y.rank - 1,), keepdims=True)))]


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


class SoftmaxCrossEntropyGrad(Op):
    """d loss / d logits = (probs·Σlabels - labels)·g, labels as ids (`sparse`) or rows (Σ = 1 for ids)."""

    name = "softmax_cross_entropy_grad"
    differentiable = False  # a gradient: training differentiates once

    def infer(self, attrs, probs, labels, g):
        return [probs]

    def reference(self, attrs, probs, labels, g):
        target = np.eye(probs.shape[-1], dtype=np.float32)[labels] if attrs["sparse"] else labels
        mass = target.sum(-1, keepdims=True)
        return [((probs * mass - target) * g[..., None]).astype(probs.dtype)]


OPS = [ReduceSum(), Count(), Softmax(), LogSoftmax(), SoftmaxCrossEntropy(), SoftmaxCrossEntropyGrad()]
