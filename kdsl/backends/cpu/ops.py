"""The CPU target's code for every op that is not elementwise, keyed by op class.

Elementwise ops need no entry: the emitter fuses them into loops through their scalar forms.
Each rule gets the `Emitter` and one equation and writes Numba statements that compute the
equation's outputs into their buffers; products go through BLAS (`kdsl.backends.cpu.support.blas`),
their rows split across threads where `kdsl.backends.cpu.policy` says it pays.
"""

from __future__ import annotations

from collections.abc import Callable

from kdsl.backends.cpu.emitter import Emitter
from kdsl.backends.cpu.policy import worth_threads
from kdsl.backends.row_templates import row_softmax_lines, softmax_cross_entropy_lines
from kdsl.ir.ops.base import Op
from kdsl.ir.ops.elementwise import OneHot
from kdsl.ir.ops.linalg import GatherMatMul, GatherMatMulGrads, MatMul, MatMulTN
from kdsl.ir.ops.reduce import Count, LogSoftmax, ReduceSum, Softmax, SoftmaxCrossEntropy, SoftmaxCrossEntropyGrad
from kdsl.ir.ops.replicas import ReplicaSum
from kdsl.ir.ops.scan import Scan
from kdsl.ir.ops.shape import Concat, Fill, Flip, Gather, GatherGrad, Repeat, Reshape, ReshapeLike, Split, Transpose
from kdsl.ir.program import Eqn, Var
from kdsl.ir.types import TensorType

Rule = Callable[[Emitter, Eqn], None]

ZERO = "np.float32(0.0)"


# --- products -------------------------------------------------------------------------------------


def emit_product(em: Emitter, a: Var, w: Var, y: Var, transpose_b: bool = False, large: bool = False) -> None:
    """y = a·w (or a·wᵀ), its rows split across threads when the product is `large` or looks it."""
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


def emit_product_tn(em: Emitter, a: Var, b: Var, y: Var, large: bool = False) -> None:
    """y = aᵀ·b over all leading axes; when `large` or it looks it, each thread sums its rows' share."""
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


def _matmul(em: Emitter, eqn: Eqn) -> None:
    (a, w), y = eqn.inputs, eqn.out
    emit_product(em, a, w, y, bool(eqn.attrs.get("transpose_b")))


def _matmul_tn(em: Emitter, eqn: Eqn) -> None:
    emit_product_tn(em, *eqn.inputs, eqn.out)


# --- embeddings folded into products ----------------------------------------------------------------


def _id_at(em: Emitter, ids: Var, perm: tuple[int, ...], idx: list[str]) -> str:
    """The id for element `idx` of a folded product's rows, whose axes are the ids' reordered by `perm`."""
    at = [""] * len(perm)
    for axis, p in enumerate(perm):
        at[p] = idx[axis]
    return em.index(ids, at)


def _gather_matmul(em: Emitter, eqn: Eqn) -> None:
    """With more ids than table rows, the table is projected once and its rows picked; with fewer, the rows
    are picked and projected (see `GatherMatMul`). With `in_loop`, the time loop reading the result picks
    the projected table's rows at each step itself."""
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
            em.rows_in_loop[id(y)] = (projected, by_id, lambda *at: _id_at(em, ids, perm, list(at)))
        else:
            _pick_rows(em, projected, ids, eqn.attrs["perm"], y)
    with em.block("else:"):
        _pick_rows(em, table, ids, eqn.attrs["perm"], picked)
        emit_product(em, picked, w, y)


def _pick_rows(em: Emitter, source: Var, ids: Var, perm: tuple[int, ...], out: Var) -> None:
    """out[...] = source[id] row by row; on threads, each takes a share of the first axis."""
    if not em.threaded:
        _copy_rows(em, source, ids, perm, out)
        return
    with em.row_chunks(f"{em.ref(out)}.shape[0]") as (_, _, lo, hi):
        _copy_rows(em, source, ids, perm, out, (lo, hi))


def _copy_rows(
    em: Emitter, source: Var, ids: Var, perm: tuple[int, ...], out: Var, first: tuple[str, str] | None = None
) -> None:
    row, j = em.fresh("row"), em.fresh("j")
    with em.loops(out, skip_last=True, first=first) as idx:
        em.line(f"{row} = {_id_at(em, ids, perm, idx)}")
        with em.block(f"for {j} in range({em.ref(source)}.shape[1]):"):
            em.line(f"{em.index(out, [*idx, j])} = {em.ref(source)}[{row}, {j}]")


def _gather_matmul_grads(em: Emitter, eqn: Eqn) -> None:
    """With more ids than table rows, g's rows summed by id then two table-sized products; else the products
    of the picked rows (see `GatherMatMulGrads`)."""
    (table, ids, w, g), (dw, dtable), perm = eqn.inputs, eqn.outputs, eqn.attrs["perm"]
    summed = Var(TensorType("f32", (table.shape[0], w.shape[1])), "summed")
    picked = Var(TensorType("f32", (*g.shape[:-1], table.shape[1])), "picked")
    back = Var(picked.type, "back")
    em.ref(summed), em.ref(picked), em.ref(back)  # all carved from the arena; each call uses some
    with em.block(f"if {em.ref(ids)}.size > {em.ref(table)}.shape[0]:"):
        _sum_rows(em, g, ids, perm, summed)
        emit_product_tn(em, table, summed, dw, large=True)
        emit_product(em, summed, w, dtable, transpose_b=True, large=True)
    with em.block("else:"):
        _pick_rows(em, table, ids, perm, picked)
        emit_product_tn(em, picked, g, dw)
        emit_product(em, g, w, back, transpose_b=True)
        _sum_rows(em, back, ids, perm, dtable)


def _sum_rows(em: Emitter, source: Var, ids: Var, perm: tuple[int, ...], out: Var) -> None:
    """out[id] = the sum of `source`'s rows with that id; threads take a share of the columns each."""
    into, part, j, o = em.fresh("into"), em.fresh("part"), em.fresh("j"), em.ref(out)
    with em.row_chunks(f"{o}.shape[1]") as (_, _, lo, hi):
        em.line(f"{o}[:, {lo}:{hi}] = {ZERO}")
        with em.loops(source, skip_last=True) as idx:
            # indices from 0 over slices: with `range(lo, hi)` Numba cannot rule out a negative index,
            # and the check it adds keeps LLVM from vectorizing the sum
            em.line(f"{into} = {o}[{_id_at(em, ids, perm, idx)}, {lo}:{hi}]")
            em.line(f"{part} = {em.index(source, [*idx, f'{lo}:{hi}'])}")
            with em.block(f"for {j} in range({into}.shape[0]):"):
                em.line(f"{into}[{j}] += {part}[{j}]")


# --- reductions and rows ----------------------------------------------------------------------------


def _reduce_sum(em: Emitter, eqn: Eqn) -> None:
    (x,), y = eqn.inputs, eqn.out
    axes, keep = eqn.attrs["axes"], eqn.attrs.get("keepdims", False)
    total = em.fresh("total") if y.rank == 0 else None  # a full sum accumulates in a register
    if total:
        em.line(f"{total} = {ZERO}")
    else:
        em.line(f"{em.ref(y)}[...] = {ZERO}")
    with em.loops(x) as idx:
        if keep:
            out_idx = ["0" if a in axes else i for a, i in enumerate(idx)]
        else:
            out_idx = [i for a, i in enumerate(idx) if a not in axes]
        target = total or f"{em.ref(y)}[{', '.join(out_idx)}]"
        em.line(f"{target} += {em.ref(x)}[{', '.join(idx)}]")
    if total:
        em.line(f"{em.ref(y)} = {total}")


def _count(em: Emitter, eqn: Eqn) -> None:
    dims = " * ".join(f"{em.ref(eqn.inputs[0])}.shape[{a}]" for a in eqn.attrs["axes"])
    em.bind(eqn.out, f"np.float32({dims or 1})")


def _replica_sum(em: Emitter, eqn: Eqn) -> None:
    """Summed in a copy (the input may be read again), through the support package's call back to the host."""
    (x,), y = eqn.inputs, eqn.out
    total = em.fresh("total")
    em.line(f"{total} = np.full(1, {em.ref(x)}, np.float32)" if x.rank == 0 else f"{total} = {em.ref(x)}.copy()")
    em.line(f"replica_sum({total}.reshape({total}.size), {bool(eqn.attrs.get('gradient', False))})")
    em.line(f"{em.ref(y)} = {total}[0]" if y.rank == 0 else f"{em.ref(y)}[...] = {total}")


def _row_softmax(em: Emitter, x: Var, y: Var, idx: list[str], log: bool) -> None:
    row = "".join(f"{i}, " for i in idx)
    x_at, y_at = (lambda j: f"{em.ref(x)}[{row}{j}]"), (lambda j: f"{em.ref(y)}[{row}{j}]")
    row_softmax_lines(em, x_at, y_at, f"{em.ref(x)}.shape[-1]", ZERO, log)


def _softmax(em: Emitter, eqn: Eqn) -> None:
    with em.loops(eqn.out, skip_last=True) as idx:
        _row_softmax(em, eqn.inputs[0], eqn.out, idx, log=isinstance(eqn.op, LogSoftmax))


def _softmax_cross_entropy(em: Emitter, eqn: Eqn) -> None:
    (logits, labels), (probs, loss) = eqn.inputs, eqn.outputs
    with em.loops(loss) as idx:
        row = "".join(f"{i}, " for i in idx)
        at = lambda var: lambda j: f"{em.ref(var)}[{row}{j}]"  # noqa: E731
        label = em.index(labels, idx) if eqn.attrs["sparse"] else None
        n = f"{em.ref(logits)}.shape[-1]"
        softmax_cross_entropy_lines(em, at(logits), at(probs), at(labels), em.index(loss, idx), label, n, ZERO)


def _softmax_cross_entropy_grad(em: Emitter, eqn: Eqn) -> None:
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
            em.line(f"{mass} = {ZERO}")
            with em.block(f"for {j} in range({em.ref(probs)}.shape[-1]):"):
                em.line(f"{mass} += {em.ref(labels)}[{row}{j}]")
            with em.block(f"for {j} in range({em.ref(probs)}.shape[-1]):"):
                target, label = f"{em.ref(dx)}[{row}{j}]", f"{em.ref(labels)}[{row}{j}]"
                em.line(f"{target} = {target} * {mass} - {label} * {em.index(g, idx)}")


def _one_hot(em: Emitter, eqn: Eqn) -> None:
    ids, y = eqn.inputs[0], eqn.out
    em.line(f"{em.ref(y)}[...] = {ZERO}")
    with em.loops(ids) as idx:
        em.line(f"{em.ref(y)}[{', '.join(idx)}{', ' if idx else ''}{em.index(ids, idx)}] = np.float32(1.0)")


# --- data movement ----------------------------------------------------------------------------------


def _reshape(em: Emitter, eqn: Eqn) -> None:
    dims = [em.dim(d) if isinstance(d, int) or "*" not in d else "-1" for d in eqn.attrs["shape"]]
    em.bind(eqn.out, f"{em.ref(eqn.inputs[0])}.reshape(({', '.join(dims)},))")


def _reshape_like(em: Emitter, eqn: Eqn) -> None:
    em.bind(eqn.out, f"{em.ref(eqn.inputs[0])}.reshape({em.ref(eqn.inputs[1])}.shape)")


def _transpose(em: Emitter, eqn: Eqn) -> None:
    perm = eqn.attrs["perm"]
    with em.loops(eqn.out) as idx:
        source = [""] * len(perm)
        for out_axis, in_axis in enumerate(perm):
            source[in_axis] = idx[out_axis]
        em.line(f"{em.index(eqn.out, idx)} = {em.index(eqn.inputs[0], source)}")


def _flip(em: Emitter, eqn: Eqn) -> None:
    axis, x = eqn.attrs["axis"], eqn.inputs[0]
    with em.loops(eqn.out) as idx:
        source = list(idx)
        source[axis] = f"{em.ref(x)}.shape[{axis}] - 1 - {idx[axis]}"
        em.line(f"{em.index(eqn.out, idx)} = {em.index(x, source)}")


def _concat(em: Emitter, eqn: Eqn) -> None:
    axis, offset = eqn.attrs["axis"], "0"
    for x in eqn.inputs:
        with em.loops(x) as idx:
            target = list(idx)
            target[axis] = f"{offset} + {idx[axis]}"
            em.line(f"{em.index(eqn.out, target)} = {em.index(x, idx)}")
        offset = f"{offset} + {em.ref(x)}.shape[{axis}]"


def _split(em: Emitter, eqn: Eqn) -> None:
    axis, offset = eqn.attrs["axis"], 0
    for out, size in zip(eqn.outputs, eqn.attrs["sizes"]):
        with em.loops(out) as idx:
            source = list(idx)
            source[axis] = f"{offset} + {idx[axis]}"
            em.line(f"{em.index(out, idx)} = {em.index(eqn.inputs[0], source)}")
        offset += size


def _repeat(em: Emitter, eqn: Eqn) -> None:
    with em.loops(eqn.out) as idx:
        em.line(f"{em.index(eqn.out, idx)} = {em.index(eqn.inputs[0], [idx[0], *idx[2:]])}")


def _gather(em: Emitter, eqn: Eqn) -> None:
    (table, ids), y = eqn.inputs, eqn.out
    T, j, row = em.ref(table), em.fresh("j"), em.fresh("row")
    with em.loops(ids) as idx:
        em.line(f"{row} = {em.index(ids, idx)}")
        with em.block(f"if {row} < 0 or {row} >= {T}.shape[0]:"):
            em.line("raise IndexError('token id out of range of the embedding table')")
        with em.block(f"for {j} in range({T}.shape[1]):"):
            em.line(f"{em.ref(y)}[{', '.join(idx)}, {j}] = {T}[{row}, {j}]")


def _gather_grad(em: Emitter, eqn: Eqn) -> None:
    (g, ids, _), y = eqn.inputs, eqn.out
    j, row = em.fresh("j"), em.fresh("row")
    em.line(f"{em.ref(y)}[...] = {ZERO}")
    with em.loops(ids) as idx:
        em.line(f"{row} = {em.index(ids, idx)}")
        with em.block(f"for {j} in range({em.ref(y)}.shape[1]):"):
            em.line(f"{em.ref(y)}[{row}, {j}] += {em.ref(g)}[{', '.join(idx)}, {j}]")


def _fill(em: Emitter, eqn: Eqn) -> None:
    em.line(f"{em.ref(eqn.out)}[...] = np.float32({eqn.attrs['value']!r})")


RULES: dict[type[Op], Rule] = {
    MatMul: _matmul,
    MatMulTN: _matmul_tn,
    GatherMatMul: _gather_matmul,
    GatherMatMulGrads: _gather_matmul_grads,
    ReduceSum: _reduce_sum,
    Count: _count,
    ReplicaSum: _replica_sum,
    Softmax: _softmax,
    LogSoftmax: _softmax,
    SoftmaxCrossEntropy: _softmax_cross_entropy,
    SoftmaxCrossEntropyGrad: _softmax_cross_entropy_grad,
    OneHot: _one_hot,
    Reshape: _reshape,
    ReshapeLike: _reshape_like,
    Transpose: _transpose,
    Flip: _flip,
    Concat: _concat,
    Split: _split,
    Repeat: _repeat,
    Gather: _gather,
    GatherGrad: _gather_grad,
    Fill: _fill,
    Scan: Emitter.scan,  # a time loop: `kdsl.backends.cpu.time_loop`
}
