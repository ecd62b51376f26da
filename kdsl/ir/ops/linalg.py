"""Matrix products: BLAS does the work on every backend (on the CPU target through `product`, see
`kdsl.backends.cpu.blas`).

`matmul` contracts the last axis of `a` with a weight matrix, whatever `a`'s leading axes
(a sequence's input projection is one GEMM over all timesteps). `matmul_tn` contracts
all leading axes of two tensors: a weight gradient summed over batch and time in one GEMM.
"""

from __future__ import annotations

import numpy as np

from kdsl.ir.ops.base import Op, numel
from kdsl.ir.ops.shape import Gather
from kdsl.ir.program import Var
from kdsl.ir.types import TensorType


def worth_threads(a, b) -> bool:
    """Split a product across threads only when it is large: a sequence's (rows over time and batch)
    or a big weight matrix. Handing chunks to threads costs tens of microseconds."""
    return a.rank >= 3 or a.shape[-1] * b.shape[-1] >= 65536


def emit_product(em, a: Var, w: Var, y: Var, transpose_b: bool = False, large: bool = False) -> None:
    """CPU code for y = a·w (or a·wᵀ), its rows split across threads when the product is `large` or looks it."""
    prepared = em.prepared_weight(w, transpose_b)
    if prepared is not None:
        em.step_product(a, y, prepared)
        return
    weight = em.right_operand(w, transpose_b)
    if not (em.threaded and (large or worth_threads(a, w))):
        em.line(f"product({em.matrix(a)}, {weight}, {em.matrix(y)})")
        return
    rows, out = em.fresh("rows"), em.fresh("out")
    em.line(f"{rows}, {out} = {em.matrix(a)}, {em.matrix(y)}")
    with em.row_chunks(f"{rows}.shape[0]") as (_, _, lo, hi):  # one block of rows per thread
        em.line(f"product({rows}[{lo}:{hi}], {weight}, {out}[{lo}:{hi}])")


def emit_product_tn(em, a: Var, b: Var, y: Var, large: bool = False) -> None:
    """CPU code for y = aᵀ·b over all leading axes; when `large` or it looks it, each thread sums its rows' share."""
    if not (em.threaded and (large or worth_threads(a, b))):
        em.line(f"product({em.matrix(a)}.T, {em.matrix(b)}, {em.ref(y)})")
        return
    left, right, parts, part = em.fresh("left"), em.fresh("right"), em.fresh("parts"), em.fresh("part")
    em.line(f"{left}, {right} = {em.matrix(a)}, {em.matrix(b)}")
    # each thread sums its rows: the first into the result, the others into partial sums added after
    count = em.chunk_count(f"{left}.shape[0]")
    em.line(f"{parts} = np.empty(({count} - 1, {left}.shape[1], {right}.shape[1]), np.float32)")
    with em.row_chunks(f"{left}.shape[0]", count) as (chunk, _, lo, hi):
        em.line(f"{part} = {em.ref(y)} if {chunk} == 0 else {parts}[{chunk} - 1]")
        em.line(f"product({left}[{lo}:{hi}].T, {right}[{lo}:{hi}], {part})")
    k = em.fresh("k")
    with em.block(f"for {k} in range(1, {count}):"):
        em.line(f"{em.ref(y)} += {parts}[{k} - 1]")


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
        emit_product(em, a, w, y, bool(eqn.attrs.get("transpose_b")))

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
        emit_product_tn(em, *eqn.inputs, eqn.out)

    def flops(self, eqn, sizes):
        a, b = eqn.inputs
        return 2 * numel(a.shape, sizes) * b.shape[-1]


def id_at(em, ids: Var, perm: tuple[int, ...], idx: list[str]) -> str:
    """The id for element `idx` of a folded product's rows, whose axes are the ids' reordered by `perm`."""
    at = [""] * len(perm)
    for axis, p in enumerate(perm):
        at[p] = idx[axis]
    return em.index(ids, at)


class GatherMatMul(Op):
    """Rows of table·w picked by integer ids: an embedding folded into the product that reads it.

    y[i, j, ...] = table[ids[...]]·w, the ids' axes reordered by `perm` (an embedding read
    time-major by a recurrent layer). Made after autodiff by `kdsl.passes.fold`, so it needs
    no gradient (a training step gets `gather_matmul_grads` in place of the gradient's ops).
    Which order of work is cheaper depends on the batch, so the code decides when it runs:
    with more ids than table rows, the table is projected once and its rows picked (W3 at
    batch 256: 25,600 token projections against 1,000); with fewer, the rows are picked and
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

    def cpu(self, em, eqn):
        (table, ids, w), y = eqn.inputs, eqn.out
        t, i = em.ref(table), em.ref(ids)
        projected = Var(TensorType("f32", (table.shape[0], w.shape[1])), "projected")
        picked = Var(TensorType("f32", (*y.shape[:-1], table.shape[1])), "picked")
        em.ref(projected), em.ref(picked)  # both carved from the arena; each call uses one
        with em.block(f"if {i}.size and ({i}.min() < 0 or {i}.max() >= {t}.shape[0]):"):
            em.line("raise IndexError('token id out of range of the embedding table')")
        with em.block(f"if {i}.size > {t}.shape[0]:"):
            emit_product(em, table, w, projected, large=True)
            if eqn.attrs.get("in_loop"):  # the time loop reading y picks its rows itself
                perm = eqn.attrs["perm"]
                by_id = f"{i}.size > {t}.shape[0]"
                em.rows_in_loop[id(y)] = (projected, by_id, lambda *at: id_at(em, ids, perm, list(at)))
            else:
                self._pick_rows(em, projected, ids, eqn.attrs["perm"], y)
        with em.block("else:"):
            self._pick_rows(em, table, ids, eqn.attrs["perm"], picked)
            emit_product(em, picked, w, y)

    @staticmethod
    def _pick_rows(em, source: Var, ids: Var, perm: tuple[int, ...], out: Var) -> None:
        """out[...] = source[id] row by row; on threads, each takes a share of the first axis."""
        if not em.threaded:
            GatherMatMul._copy_rows(em, source, ids, perm, out)
            return
        with em.row_chunks(f"{em.ref(out)}.shape[0]") as (_, _, lo, hi):
            GatherMatMul._copy_rows(em, source, ids, perm, out, (lo, hi))

    @staticmethod
    def _copy_rows(em, source: Var, ids: Var, perm: tuple[int, ...], out: Var, first=None) -> None:
        row, j = em.fresh("row"), em.fresh("j")
        with em.loops(out, skip_last=True, first=first) as idx:
            em.line(f"{row} = {id_at(em, ids, perm, idx)}")
            with em.block(f"for {j} in range({em.ref(source)}.shape[1]):"):
                em.line(f"{em.index(out, [*idx, j])} = {em.ref(source)}[{row}, {j}]")

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

    def cpu(self, em, eqn):
        (table, ids, w, g), (dw, dtable), perm = eqn.inputs, eqn.outputs, eqn.attrs["perm"]
        summed = Var(TensorType("f32", (table.shape[0], w.shape[1])), "summed")
        picked = Var(TensorType("f32", (*g.shape[:-1], table.shape[1])), "picked")
        back = Var(picked.type, "back")
        em.ref(summed), em.ref(picked), em.ref(back)  # all carved from the arena; each call uses some
        with em.block(f"if {em.ref(ids)}.size > {em.ref(table)}.shape[0]:"):
            self._sum_rows(em, g, ids, perm, summed)
            emit_product_tn(em, table, summed, dw, large=True)
            emit_product(em, summed, w, dtable, transpose_b=True, large=True)
        with em.block("else:"):
            GatherMatMul._pick_rows(em, table, ids, perm, picked)
            emit_product_tn(em, picked, g, dw)
            emit_product(em, g, w, back, transpose_b=True)
            self._sum_rows(em, back, ids, perm, dtable)

    @staticmethod
    def _sum_rows(em, source: Var, ids: Var, perm: tuple[int, ...], out: Var) -> None:
        """out[id] = the sum of `source`'s rows with that id; threads take a share of the columns each."""
        into, part, j, o = em.fresh("into"), em.fresh("part"), em.fresh("j"), em.ref(out)
        with em.row_chunks(f"{o}.shape[1]") as (_, _, lo, hi):
            em.line(f"{o}[:, {lo}:{hi}] = np.float32(0.0)")
            with em.loops(source, skip_last=True) as idx:
                # indices from 0 over slices: with `range(lo, hi)` Numba cannot rule out a negative
                # index, and the check it adds kept LLVM from vectorizing the sum (2.6 ms against 0.46)
                em.line(f"{into} = {o}[{id_at(em, ids, perm, idx)}, {lo}:{hi}]")
                em.line(f"{part} = {em.index(source, [*idx, f'{lo}:{hi}'])}")
                with em.block(f"for {j} in range({into}.shape[0]):"):
                    em.line(f"{into}[{j}] += {part}[{j}]")

    def flops(self, eqn, sizes):
        (table, ids, w, _) = eqn.inputs
        return 4 * min(numel(ids.shape, sizes), table.shape[0]) * table.shape[1] * w.shape[1]


OPS = [MatMul(), MatMulTN(), GatherMatMul(), GatherMatMulGrads()]
