"""Matrix products. Both run through `np.dot`, so BLAS does the work on every backend.

`matmul` contracts the last axis of `a` with a weight matrix, whatever `a`'s leading axes
(a sequence's input projection is one GEMM over all timesteps). `matmul_tn` contracts
all leading axes of two tensors: a weight gradient summed over batch and time in one GEMM.
"""

from __future__ import annotations

import numpy as np

from kdsl.ir.ops.base import Op, numel
from kdsl.ir.types import TensorType


def worth_threads(a, b) -> bool:
    """Split a product across threads only when it is large: a sequence's (rows over time and batch)
    or a big weight matrix. A parallel region costs tens of microseconds to open."""
    return a.rank >= 3 or a.shape[-1] * b.shape[-1] >= 65536


class MatMul(Op):
    """a[..., K] @ w[K, N] (or w[N, K] with `transpose_b`) -> [..., N]."""

    name = "matmul"

    def infer(self, attrs, a, w):
        k, n = reversed(w.dims) if attrs.get("transpose_b") else w.dims
        if w.rank != 2 or a.dims[-1] != k:
            raise ValueError(f"matmul: {a} by {w}")
        return [TensorType("f32", (*a.dims[:-1], n))]

    def reference(self, attrs, a, w):
        return [np.matmul(a, w.T if attrs.get("transpose_b") else w).astype(a.dtype)]

    def vjp(self, b, eqn, grads):
        (a, w), (g,) = eqn.inputs, grads
        if eqn.attrs.get("transpose_b"):
            return [b.matmul(g, w), b.matmul_tn(g, a)]
        return [b.matmul(g, w, transpose_b=True), b.matmul_tn(a, g)]

    def cpu(self, em, eqn):
        (a, w), y = eqn.inputs, eqn.out
        weight = em.right_operand(w, bool(eqn.attrs.get("transpose_b")))
        if not (em.threaded and worth_threads(a, w)):
            em.line(f"np.dot({em.matrix(a)}, {weight}, {em.matrix(y)})")
            return
        rows, out = em.fresh("rows"), em.fresh("out")
        em.line(f"{rows}, {out} = {em.matrix(a)}, {em.matrix(y)}")
        with em.row_chunks(f"{rows}.shape[0]") as (_, _, lo, hi):  # one block of rows per thread
            em.line(f"np.dot({rows}[{lo}:{hi}], {weight}, {out}[{lo}:{hi}])")

    def flops(self, eqn, sizes):
        return 2 * numel(eqn.inputs[0].shape, sizes) * eqn.out.shape[-1]


class MatMulTN(Op):
    """a[..., K]ᵀ @ b[..., N] -> [K, N], contracting every leading axis."""

    name = "matmul_tn"

    def infer(self, attrs, a, b):
        if a.dims[:-1] != b.dims[:-1]:
            raise ValueError(f"matmul_tn: {a} by {b}")
        return [TensorType("f32", (a.dims[-1], b.dims[-1]))]

    def reference(self, attrs, a, b):
        return [np.matmul(a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1])).astype(a.dtype)]

    def vjp(self, b, eqn, grads):
        (x, y), (g,) = eqn.inputs, grads
        return [b.matmul(y, g, transpose_b=True), b.matmul(x, g)]

    def cpu(self, em, eqn):
        (a, b), y = eqn.inputs, eqn.out
        if not (em.threaded and worth_threads(a, b)):
            em.line(f"np.dot({em.matrix(a)}.T, {em.matrix(b)}, {em.ref(y)})")
            return
        left, right, parts, part = em.fresh("left"), em.fresh("right"), em.fresh("parts"), em.fresh("part")
        em.line(f"{left}, {right} = {em.matrix(a)}, {em.matrix(b)}")
        # each thread sums its rows: the first into the result, the others into partial sums added after
        count = em.chunk_count(f"{left}.shape[0]")
        em.line(f"{parts} = np.empty(({count} - 1, {left}.shape[1], {right}.shape[1]), np.float32)")
        with em.row_chunks(f"{left}.shape[0]", count) as (chunk, _, lo, hi):
            em.line(f"{part} = {em.ref(y)} if {chunk} == 0 else {parts}[{chunk} - 1]")
            em.line(f"np.dot({left}[{lo}:{hi}].T, {right}[{lo}:{hi}], {part})")
        k = em.fresh("k")
        with em.block(f"for {k} in range(1, {count}):"):
            em.line(f"{em.ref(y)} += {parts}[{k} - 1]")

    def flops(self, eqn, sizes):
        a, b = eqn.inputs
        return 2 * numel(a.shape, sizes) * b.shape[-1]


OPS = [MatMul(), MatMulTN()]
