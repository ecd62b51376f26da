"""The fastest a workload could run on this machine, from two probes measured in the same run.

A GEMM-bound workload cannot beat its FLOPs at the machine's float32 GEMM rate. A recurrent step at a batch
of one or two is bound instead by reading its recurrent weight once a step from wherever it lives (L2 when
each core's half fits there, else L3 or memory): `read_rate` measures that by streaming a buffer of the
same size, half on each core, as the loop split by columns does. Such a workload's limit is its weight
streamed at every step plus the rest of its work (the input projection) at the GEMM rate.
"""

from __future__ import annotations

import functools
import threading
import time

import numba
import numpy as np


@numba.njit(nogil=True, fastmath=True, cache=True)
def _stream(buffer, passes):
    total = np.float32(0.0)
    for _ in range(passes):
        for i in range(buffer.size):
            total += buffer[i]
    return total


@functools.cache
def read_rate(size: int, cores: int = 2) -> float:
    """Bytes a second that `cores` threads read together, each streaming its share of `size` bytes again and
    again from where that share stays (best of five rounds of at least 20 ms)."""
    shares = [np.ones(max(16, size // cores // 4), np.float32) for _ in range(cores)]
    passes = max(1, int(1e9 // (size or 1)))
    for share in shares:
        _stream(share, 1)  # compiled, and each share in its cache

    def round_seconds() -> float:
        threads = [threading.Thread(target=_stream, args=(share, passes)) for share in shares]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started

    best = min(round_seconds() for _ in range(5))
    return sum(share.nbytes for share in shares) * passes / best


def limit_seconds(flops: float, gemm_rate: float, streamed: tuple[int, int, int] | None = None) -> float:
    """The least time for `flops` at `gemm_rate` (GFLOP/s); with `streamed` (steps, weight bytes, rows), the
    weight is read at every step at `read_rate` and only the rest of the work goes at the GEMM rate."""
    if streamed is None:
        return flops / gemm_rate / 1e9
    steps, weight_bytes, rows = streamed
    step_flops = steps * 2 * rows * (weight_bytes // 4)
    return max(0.0, flops - step_flops) / gemm_rate / 1e9 + steps * weight_bytes / read_rate(weight_bytes)
