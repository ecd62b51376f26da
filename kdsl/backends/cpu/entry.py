"""The Python side of a generated entry point: check and bind the arguments, hand the kernel its arena.

This module's source is copied into generated modules, so it uses only NumPy and the
layout planner and BLAS helpers next to it.
"""

import contextlib

import numba
import numpy as np

from kdsl.backends.cpu.blas import loaded_blas
from kdsl.backends.cpu.loop_products import small_product_limit


class EntryPoint:
    """One compiled program: `outputs = entry(*arrays)`, arrays in the order of `arguments`.

    The arena holding every intermediate buffer is allocated once per set of symbolic
    sizes (the batch size, usually) and reused by every later call. Returned arrays are
    views of that arena: they stay valid until the next call.
    """

    def __init__(self, kernel, arguments, buffers, lifetimes, plan_layout, parallel, short_loops=False):
        self.kernel = kernel
        self.parallel = parallel
        self.min_rows = MIN_ROWS_PER_THREAD if short_loops else MIN_ROWS_PER_THREAD_PREPARED
        self.arguments = arguments  # [(name, dtype, dims)]
        self.buffers = buffers  # dims of each buffer
        self.lifetimes = lifetimes
        self.plan_layout = plan_layout
        self.arenas = {}

    def symbols(self, arrays):
        sizes = {}
        for (name, _, dims), array in zip(self.arguments, arrays):
            if array.ndim != len(dims):
                raise ValueError(f"`{name}` must have {len(dims)} dimensions {tuple(dims)}, got shape {array.shape}")
            for dim, size in zip(dims, array.shape):
                if isinstance(dim, int) or "*" in dim:
                    expected = dim if isinstance(dim, int) else numel([dim], sizes)
                    if size != expected:
                        raise ValueError(f"`{name}` must have shape {tuple(dims)}, got {array.shape}")
                elif sizes.setdefault(dim, size) != size:
                    raise ValueError(f"`{name}` has {dim}={size}, but another argument has {dim}={sizes[dim]}")
        return sizes

    def arena(self, sizes):
        key = tuple(sorted(sizes.items()))
        if key not in self.arenas:
            numels = [numel(dims, sizes) for dims in self.buffers]
            offsets, total = self.plan_layout(numels, self.lifetimes)
            self.arenas[key] = (np.empty(total, np.float32), offsets)
        return self.arenas[key]

    def __call__(self, *arrays, split=None):
        """Run the kernel on `arrays`; `split` forces (True) or forbids (False) splitting the batch across
        threads, and by default it is split when each thread gets at least `min_rows` rows."""
        if len(arrays) != len(self.arguments):
            raise TypeError(f"expected {len(self.arguments)} arrays, got {len(arrays)}")
        arrays = [
            np.ascontiguousarray(a, np.float32 if dtype == "f32" else np.int32)
            for a, (_, dtype, _) in zip(arrays, self.arguments)
        ]
        sizes = self.symbols(arrays)
        arena, offsets = self.arena(sizes)
        threads, limit = numba.get_num_threads(), small_product_limit()
        if not self.parallel:
            return self.kernel(arena, offsets, 1, limit, *arrays)
        if split is None:
            split = sizes.get("batch", 0) >= self.min_rows * threads
        if not split:
            numba.set_num_threads(1)  # one thread runs the loops; BLAS uses every core inside each product
            try:
                return self.kernel(arena, offsets, 1, limit, *arrays)
            finally:
                numba.set_num_threads(threads)
        with single_threaded_blas():  # BLAS calls inside parallel regions must not start threads of their own
            return self.kernel(arena, offsets, threads, limit, *arrays)


# Splitting a batch gives each thread a time loop over its rows, with single-threaded BLAS. A long
# time loop multiplies by weights prepared before it (see `loop_products`) at nearly the same rate
# from 2 rows up, so threads pay from 8 rows each: an LSTM(256) forward at batch 16 over 150 steps
# took 16.1 ms split against 22.3 ms on one thread. A loop of a few steps multiplies whole weights,
# which BLAS runs slowly on few rows: with fewer than 32 rows per thread, one thread with BLAS
# threading each product is faster (a one-step GRU(512) training step at batch 32: 3.6 against
# 5.8 ms split).
MIN_ROWS_PER_THREAD = 32
MIN_ROWS_PER_THREAD_PREPARED = 8


@contextlib.contextmanager
def single_threaded_blas():
    """Every BLAS loaded kept to one thread; two thread pools fighting made a step 180x slower.

    Through each library's own setter: threadpoolctl's `limit` took 32 µs a call, this 13.
    """
    blas = loaded_blas()
    if blas is None:
        raise RuntimeError("parallel kernels need threadpoolctl to keep BLAS single-threaded")
    held = [(lib, count) for lib in blas if (count := lib.get_num_threads()) != 1]
    for lib, _ in held:
        lib.set_num_threads(1)
    try:
        yield
    finally:
        for lib, count in held:
            lib.set_num_threads(count)


def numel(dims, sizes):
    total = 1
    for dim in dims:
        for factor in str(dim).split("*"):
            total *= int(factor) if factor.isdigit() else sizes[factor]
    return total
