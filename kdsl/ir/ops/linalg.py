"""Matrix products: each backend hands them to BLAS or a GEMM kernel of its own.

`matmul` contracts the last axis of `a` with a weight matrix, whatever `a`'s leading axes
(a sequence's input projection is one GEMM over all timesteps). `matmul_tn` contracts
all leading axes of two tensors: a weight gradient summed over batch and time in one GEMM.
"""

from __future__ import annotations

import numpy as np

from kdsl.ir.ops.base import Op
from kdsl.ir.ops.shape import Gather
from kdsl.ir.types import BATCH, TensorType, numel


class MatMul(Op):
    """a[..., K] @ w[K, N] (or w[N, K] with `transpose_b`) -> [..., N]."""

    name = "matmul"
    product = True

    def row_wise(self, eqn):
        return eqn.inputs[1].shape[0] != BATCH  # by a weight, not by other samples' values

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

    def flops(self, eqn, sizes):
        return 2 * numel(eqn.inputs[0].shape, sizes) * eqn.out.shape[-1]


class MatMulTN(Op):
    """a[..., K]ᵀ @ b[..., N] -> [K, N], contracting every leading axis."""

    name = "matmul_tn"
    product = True

    def infer(self, attrs, a, b):
        if a.dims[:-1] != b.dims[:-1]:
            raise ValueError(f"matmul_tn: {a} by {b}")
        return [TensorType("f32", (a.dims[-1], b.dims[-1]))]

    def reference(self, attrs, a, b):
        return [np.matmul(a.reshape(-1, a.shape[-1]).T, b.reshape(-1, b.shape[-1])).astype(a.dtype)]

    def vjp(self, b, eqn, grads):
        (x, y), (g,) = eqn.inputs, grads
        return [b.matmul(y, g, transpose_b=True), b.matmul(x, g)]

    def flops(self, eqn, sizes):
        a, b = eqn.inputs
        return 2 * numel(a.shape, sizes) * b.shape[-1]


class GatherMatMul(Op):
    """Rows of table·w picked by integer ids: an embedding folded into the product that reads it.

    y[i, j, ...] = table[ids[...]]·w, the ids' axes reordered by `perm` (an embedding read
    time-major by a recurrent layer). Made after autodiff by `kdsl.passes.fold`, so it needs
    no gradient (a training step gets `gather_matmul_grads` in place of the gradient's ops).
    Which order of work is cheaper depends on the batch, so the code decides when it runs:
    with more ids than table rows, the table is projected once and its rows picked (fewer
    projections: one per table row, not one per token); with fewer, the rows are picked and
    projected. With `in_loop`, the time loop that reads y picks a projected table's rows at
    each step itself (see `kdsl.passes.fold`).
    """

    name = "gather_matmul"
    differentiable = False

    def infer(self, attrs, table, ids, w):
        if table.rank != 2 or w.rank != 2 or table.dims[1] != w.dims[0]:
            raise ValueError(f"gather_matmul: {table} by {w}")
        return [TensorType("f32", (*(ids.dims[p] for p in attrs["perm"]), w.dims[1]))]

    def reference(self, attrs, table, ids, w):
        (rows,) = Gather().reference({}, table, np.transpose(ids, attrs["perm"]))
        return [np.matmul(rows, w).astype(table.dtype)]

    def flops(self, eqn, sizes):
        (table, ids, w) = eqn.inputs
        return 2 * min(numel(ids.shape, sizes), table.shape[0]) * table.shape[1] * w.shape[1]


class GatherMatMulGrads(Op):
    """The gradients of `gather_matmul` for the weight and the table, from the output's gradient g.

    With S the rows of g summed by id (a table-sized matrix), dw = tableᵀ·S and dtable = S·wᵀ:
    two products of table size in place of two of batch × time rows. As for the forward, the
    code picks the cheaper side when it runs: with fewer ids than table rows, the rows are
    picked, dw = rowsᵀ·g and dtable sums g·wᵀ by id. Made after autodiff by `kdsl.passes.fold`;
    the forward `gather_matmul` before it has checked the ids.
    """

    name = "gather_matmul_grads"
    differentiable = False
    single_output = False

    def infer(self, attrs, table, ids, w, g):
        return [w, table]

    def reference(self, attrs, table, ids, w, g):
        summed = np.zeros((table.shape[0], g.shape[-1]), g.dtype)
        np.add.at(summed, np.transpose(ids, attrs["perm"]).reshape(-1), g.reshape(-1, g.shape[-1]))
        return [(table.T @ summed).astype(g.dtype), (summed @ w.T).astype(g.dtype)]

    def flops(self, eqn, sizes):
        (table, ids, w, _) = eqn.inputs
        return 4 * min(numel(ids.shape, sizes), table.shape[0]) * table.shape[1] * w.shape[1]


OPS = [MatMul(), MatMulTN(), GatherMatMul(), GatherMatMulGrads()]
