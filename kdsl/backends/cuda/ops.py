"""CUDA kernels for the ops that are not elementwise: one thread per output element or per row.

Each writer gets a `KernelWriter` and one equation, chooses the iteration space (`w.over`)
and writes the body for one thread. Row-wise ops (softmax, cross-entropy) give a thread a
whole row, as the CPU templates do; reductions give a thread one output element and loop
over what it sums. Matrix products and scans are not here: the runner does them.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING

from kdsl.backends.row_templates import row_softmax_lines, softmax_cross_entropy_lines
from kdsl.ir.ops.base import Op
from kdsl.ir.ops.elementwise import OneHot
from kdsl.ir.ops.reduce import Count, LogSoftmax, ReduceSum, Softmax, SoftmaxCrossEntropy, SoftmaxCrossEntropyGrad
from kdsl.ir.ops.replicas import ReplicaSum
from kdsl.ir.ops.shape import Concat, Fill, Flip, Gather, GatherGrad, Repeat, Split, Transpose
from kdsl.ir.program import Eqn

if TYPE_CHECKING:
    from kdsl.backends.cuda.writer import KernelWriter

F = "np.float32"


def write(w: KernelWriter, eqn: Eqn) -> None:
    writer = WRITERS.get(type(eqn.op))
    if writer is None:
        raise NotImplementedError(f"`{eqn.op.name}` has no CUDA kernel")
    writer(w, eqn)


def _reduce_sum(w: KernelWriter, eqn: Eqn) -> None:
    (x,), y = eqn.inputs, eqn.out
    axes, keep = eqn.attrs["axes"], eqn.attrs.get("keepdims", False)
    kept = [a for a in range(x.rank) if a not in axes]
    idx = w.over(tuple(x.shape[a] for a in kept))
    source = dict(zip(kept, idx))
    total = w.fresh("total")
    w.line(f"{total} = {F}(0.0)")
    with ExitStack() as loops:
        for a in axes:
            source[a] = w.fresh("j")
            loops.enter_context(w.block(f"for {source[a]} in range({w.size(x, a)}):"))
        w.line(f"{total} += {w.at(x, [source[a] for a in range(x.rank)])}")
    out = [("0" if a in axes else source[a]) for a in range(x.rank)] if keep else idx
    w.line(f"{w.at(y, out)} = {total}")


def _count(w: KernelWriter, eqn: Eqn) -> None:
    w.over(())
    dims = " * ".join(w.size(eqn.inputs[0], a) for a in eqn.attrs["axes"])
    w.line(f"{w.at(eqn.out, [])} = {F}({dims or 1})")


def _replica_sum(w: KernelWriter, eqn: Eqn) -> None:
    """The CUDA target trains as one replica (`Strategy.check_target`), where the sum is the value."""
    idx = w.over(eqn.out.shape)
    w.line(f"{w.at(eqn.out, idx)} = {w.at(eqn.inputs[0], idx)}")


def _row_softmax(w: KernelWriter, x, y, row: list[str], log: bool) -> None:
    """(Log-)softmax of one row: the last axis of `x` at `row`, into `y`."""
    x_at, y_at = (lambda j: w.at(x, [*row, j])), (lambda j: w.at(y, [*row, j]))
    row_softmax_lines(w, x_at, y_at, w.size(x, x.rank - 1), f"{F}(0.0)", log)


def _softmax(w: KernelWriter, eqn: Eqn) -> None:
    row = w.over(eqn.out.shape[:-1])
    _row_softmax(w, eqn.inputs[0], eqn.out, row, log=isinstance(eqn.op, LogSoftmax))


def _softmax_cross_entropy(w: KernelWriter, eqn: Eqn) -> None:
    (logits, labels), (probs, loss) = eqn.inputs, eqn.outputs
    row = w.over(loss.shape)
    at = lambda var: lambda j: w.at(var, [*row, j])  # noqa: E731
    label = w.at(labels, row) if eqn.attrs["sparse"] else None
    n = w.size(logits, logits.rank - 1)
    softmax_cross_entropy_lines(w, at(logits), at(probs), at(labels), w.at(loss, row), label, n, f"{F}(0.0)")


def _softmax_cross_entropy_grad(w: KernelWriter, eqn: Eqn) -> None:
    (probs, labels, g), dx = eqn.inputs, eqn.out
    row = w.over(g.shape)
    n, j, mass = w.size(probs, probs.rank - 1), w.fresh("j"), w.fresh("mass")
    if eqn.attrs["sparse"]:
        with w.block(f"for {j} in range({n}):"):
            w.line(f"{w.at(dx, [*row, j])} = {w.at(probs, [*row, j])} * {w.at(g, row)}")
        w.line(f"{w.at(dx, [*row, w.at(labels, row)])} -= {w.at(g, row)}")
        return
    w.line(f"{mass} = {F}(0.0)")
    with w.block(f"for {j} in range({n}):"):
        w.line(f"{mass} += {w.at(labels, [*row, j])}")
    with w.block(f"for {j} in range({n}):"):
        P, T = w.at(probs, [*row, j]), w.at(labels, [*row, j])
        w.line(f"{w.at(dx, [*row, j])} = {P} * {w.at(g, row)} * {mass} - {T} * {w.at(g, row)}")


def _one_hot(w: KernelWriter, eqn: Eqn) -> None:
    ids, y = eqn.inputs[0], eqn.out
    idx = w.over(y.shape)
    w.line(f"{w.at(y, idx)} = {F}(1.0) if {w.at(ids, idx[:-1])} == {idx[-1]} else {F}(0.0)")


def _transpose(w: KernelWriter, eqn: Eqn) -> None:
    perm, y = eqn.attrs["perm"], eqn.out
    idx = w.over(y.shape)
    source = [""] * len(perm)
    for out_axis, in_axis in enumerate(perm):
        source[in_axis] = idx[out_axis]
    w.line(f"{w.at(y, idx)} = {w.at(eqn.inputs[0], source)}")


def _flip(w: KernelWriter, eqn: Eqn) -> None:
    axis, (x,), y = eqn.attrs["axis"], eqn.inputs, eqn.out
    idx = w.over(y.shape)
    source = list(idx)
    source[axis] = f"{w.size(x, axis)} - 1 - {idx[axis]}"
    w.line(f"{w.at(y, idx)} = {w.at(x, source)}")


def _concat(w: KernelWriter, eqn: Eqn) -> None:
    """Each output element reads the input its position along `axis` falls in."""
    axis, y = eqn.attrs["axis"], eqn.out
    idx = w.over(y.shape)
    _pieces(w, eqn.inputs, axis, idx, lambda x, source: f"{w.at(y, idx)} = {w.at(x, source)}")


def _split(w: KernelWriter, eqn: Eqn) -> None:
    """Each input element is written to the piece its position along `axis` falls in."""
    axis, (x,) = eqn.attrs["axis"], eqn.inputs
    idx = w.over(x.shape)
    _pieces(w, eqn.outputs, axis, idx, lambda piece, target: f"{w.at(piece, target)} = {w.at(x, idx)}")


def _pieces(w: KernelWriter, pieces, axis: int, idx: list[str], statement: Callable) -> None:
    """`statement(piece, index within it)` for the piece holding position `idx[axis]` of the whole."""
    offset = "0"
    for k, piece in enumerate(pieces):
        end = f"{offset} + {w.size(piece, axis)}"
        last = k == len(pieces) - 1
        header = "else:" if last and k else f"{'elif' if k else 'if'} {idx[axis]} < {end}:"
        with w.block(header):
            inner = list(idx)
            inner[axis] = f"{idx[axis]} - ({offset})"
            w.line(statement(piece, inner))
        offset = end


def _repeat(w: KernelWriter, eqn: Eqn) -> None:
    idx = w.over(eqn.out.shape)
    w.line(f"{w.at(eqn.out, idx)} = {w.at(eqn.inputs[0], [idx[0], *idx[2:]])}")


def _gather(w: KernelWriter, eqn: Eqn) -> None:
    """Rows of the table; an id out of range gives NaN (a kernel cannot raise; the runner checks input ids)."""
    (table, ids), y = eqn.inputs, eqn.out
    idx = w.over(y.shape)
    row = w.fresh("row")
    w.line(f"{row} = {w.at(ids, idx[:-1])}")
    w.line(f"{w.at(y, idx)} = {w.at(table, [row, idx[-1]])} if 0 <= {row} < {w.size(table, 0)} else {F}(math.nan)")


def _gather_grad(w: KernelWriter, eqn: Eqn) -> None:
    """Output gradients added into the rows they came from; atomic, as two ids may name one row."""
    (g, ids, _), y = eqn.inputs, eqn.out
    idx = w.over(g.shape)
    w.zeroed.append(y)
    w.line(f"cuda.atomic.add({w.array(y)}, ({w.at(ids, idx[:-1])}, {idx[-1]}), {w.at(g, idx)})")


def _fill(w: KernelWriter, eqn: Eqn) -> None:
    idx = w.over(eqn.out.shape)
    w.line(f"{w.at(eqn.out, idx)} = {F}({eqn.attrs['value']!r})")


# by op class; elementwise ops need no entry (fused loops write them from their scalar forms), nor do the ops the
# runner carries out itself: products (through the GEMM), views (reshapes) and scans
WRITERS: dict[type[Op], Callable[[KernelWriter, Eqn], None]] = {
    ReduceSum: _reduce_sum,
    Count: _count,
    ReplicaSum: _replica_sum,
    Softmax: _softmax,
    LogSoftmax: _softmax,
    SoftmaxCrossEntropy: _softmax_cross_entropy,
    SoftmaxCrossEntropyGrad: _softmax_cross_entropy_grad,
    OneHot: _one_hot,
    Transpose: _transpose,
    Flip: _flip,
    Concat: _concat,
    Split: _split,
    Repeat: _repeat,
    Gather: _gather,
    GatherGrad: _gather_grad,
    Fill: _fill,
}
