"""Loop code for the row-wise ops both code generators write the same way: (log-)softmax of a row, and a
row's softmax with its crossentropy. Each writes through a `SourceWriter` (CPU emitter or CUDA kernel
writer), with the elements of a row spelled by the caller."""

from __future__ import annotations

from collections.abc import Callable

from kdsl.backends.source import SourceWriter

At = Callable[[str], str]  # element j of a row, as code


def row_softmax_lines(w: SourceWriter, x_at: At, y_at: At, n: str, zero: str, log: bool) -> None:
    """Loop code for (log-)softmax over one row of `n` elements.

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


def softmax_cross_entropy_lines(
    w: SourceWriter, logits_at: At, probs_at: At, labels_at: At, loss: str, label: str | None, n: str, zero: str
) -> None:
    """Loop code for one row's softmax probabilities and crossentropy.

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
