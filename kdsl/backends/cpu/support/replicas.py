"""Sums across the replicas of a data-parallel job, called from inside a compiled training step.

BatchNormalization with `synchronized=True` normalizes by the statistics of the global batch: the kernel sums its
shard's statistics, and these sums (then the gradients that flow back through them) are summed across the replicas
before it goes on. The kernel calls `kdsl_replica_sum`, a C function that calls back into Python, where the program
running the kernels has set which collective does the sum (`use_replica_sum`); where none is set the job is one
replica, and a sum over one replica leaves the buffer as it is.

Part of the support package generated modules import: it needs only NumPy, Numba and llvmlite.
"""

import ctypes
from collections.abc import Callable

import numba
import numpy as np
from llvmlite import binding as llvm
from numba import types

__all__ = ["replica_sum"]  # what generated code names

SYMBOL = "kdsl_replica_sum"
SIGNATURE = types.void(types.intp, types.int64, types.int64)  # (float32 buffer's address, size, gradient?)

# (buffer, gradient) -> None, summing `buffer` in place; None: one replica
_summing: list[Callable[[np.ndarray, bool], None] | None] = [None]


def use_replica_sum(summing: Callable[[np.ndarray, bool], None] | None) -> None:
    """Have the kernels' replica sums done by `summing(buffer, gradient)` (None: one replica, nothing to do)."""
    _summing[0] = summing


def _sum_from_kernel(address: int, size: int, gradient: int) -> None:
    summing = _summing[0]
    if summing is not None and size:
        summing(np.ctypeslib.as_array((ctypes.c_float * size).from_address(address)), bool(gradient))


_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(_sum_from_kernel)
llvm.add_symbol(SYMBOL, ctypes.cast(_CALLBACK, ctypes.c_void_p).value)
_replica_sum_by_name = types.ExternalFunction(SYMBOL, SIGNATURE)


@numba.njit(cache=True, nogil=True)
def replica_sum(buffer, gradient):
    """Sum the contiguous float32 `buffer` in place across the replicas; `gradient`: it holds the gradients of the
    replicas' sums, each replica's scaled by its share of the global batch (see `kdsl.distribute`)."""
    _replica_sum_by_name(buffer.ctypes.data, buffer.size, 1 if gradient else 0)
