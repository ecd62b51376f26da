"""When the CPU target's kernels use threads, and how a time loop runs: the decisions, apart from the code
that carries them out (`kdsl.backends.cpu.emitter`, `kdsl.backends.cpu.time_loop`) and the report that
explains them (`kdsl.explain`). The figures behind each threshold are in benchmarks/RESULTS.md."""

from __future__ import annotations

import math

from kdsl.ir.ops.linalg import MatMul
from kdsl.ir.ops.scan import Scan
from kdsl.ir.program import Eqn, Program, Var
from kdsl.ir.types import BATCH

# A product is split across threads from this many output columns times inner length, or for any sequence:
# handing chunks to threads costs tens of microseconds.
MIN_THREADED_PRODUCT = 65_536

# A time loop's weight is transposed (or prepared) once before the loop from this many steps on: the copy
# costs about one pass over the weight and saves part of every step's product.
MIN_STEPS_TO_TRANSPOSE = 16

# A time loop at a batch too small for a chunk of rows a thread splits the columns of its products across
# the threads when it multiplies by a weight of at least this many floats (1 MB, more than a core's L2 on
# the smaller CPUs): below that the second thread's late start and the shared cache lines cost more.
MIN_SPLIT_WEIGHT = 262_144


def worth_threads(a: Var, b: Var) -> bool:
    """Whether a product outside a time loop is split across threads: a sequence's (rows over time and batch)
    or one by a big weight matrix."""
    return a.rank >= 3 or a.shape[-1] * b.shape[-1] >= MIN_THREADED_PRODUCT


def batch_leading(var: Var) -> bool:
    return var.rank > 0 and var.shape[0] == BATCH


def long_loop(scan: Eqn) -> bool:
    """Whether a time loop runs long enough to pay for work done once before it (unknown lengths count as long)."""
    steps = scan.inputs[scan.attrs["num_carry"]].shape[0]
    return not isinstance(steps, int) or steps >= MIN_STEPS_TO_TRANSPOSE


def prepares_weights(scan: Eqn) -> bool:
    """Whether a time loop's products use weights prepared before it (see `loop_products`): long loops
    whose state has one row per sample, as the prepared products take rows."""
    return long_loop(scan) and batch_leading(scan.attrs["body"].inputs[0])


def weight_products(scan: Eqn, weight: Var) -> list[Eqn]:
    """The products in `scan`'s cell by its loop-constant `weight` (a cell input)."""
    return [e for e in scan.attrs["body"].eqns if isinstance(e.op, MatMul) and e.inputs[1] is weight]


def splits_columns(scan: Eqn) -> bool:
    """Whether a time loop at a small batch runs as parts split by columns (see `TimeLoops.scan`): a long loop
    whose products, by prepared weights of which one is large, are not among the cell's outputs (each part
    keeps those for itself, while a product's columns come from all parts)."""
    body, nc, nx = scan.attrs["body"], scan.attrs["num_carry"], scan.attrs["num_xs"]
    products = [e for w in body.inputs[nc + nx :] for e in weight_products(scan, w)]
    outputs = {id(v) for v in body.outputs}
    large = any(math.prod(e.inputs[1].shape) >= MIN_SPLIT_WEIGHT for e in products)
    return prepares_weights(scan) and large and not any(id(e.out) in outputs for e in products)


def rows_independent(scan: Eqn) -> bool:
    """Whether a scan's cell treats each sample apart, so a chunk of the batch can run its own time loop."""
    body, nc, nx = scan.attrs["body"], scan.attrs["num_carry"], scan.attrs["num_xs"]
    if not all(batch_leading(v) for v in [*body.inputs[: nc + nx], *body.outputs]):
        return False
    return all(e.op.row_wise(e) for e in body.eqns)


def splits_by_rows(program: Program) -> bool:
    """Whether threads pay: a time loop whose rows are independent can run one batch chunk per thread.

    Models without one run on one thread with BLAS free to use all cores.
    """
    return any(isinstance(eqn.op, Scan) and rows_independent(eqn) for eqn in program.eqns)
