"""The Python side of a generated entry point: check and bind the arguments, hand the kernel its arena,
and run chunks of a batch on threads.

Part of the support package generated modules import: it uses only NumPy, Numba and the modules
next to it.
"""

import _thread
import contextlib
import os
import threading

import numba
import numpy as np

from .blas import loaded_blas
from .loop_products import product_limit
from .spin import LINE, load_acquire, spin_until, store_release

__all__ = ["HELPER_STARTS", "EntryPoint", "run_chunks", "run_parts", "start_helpers"]  # what generated code names


class EntryPoint:
    """One compiled program: `outputs = entry(*arrays)`, arrays in the order of `arguments`.

    The arena holding every intermediate buffer is allocated once per set of symbolic
    sizes (the batch size, usually) and reused by every later call, its buffers' views
    made once with it (by `carve`). Returned arrays are views of that arena: they stay
    valid until the next call.
    """

    def __init__(
        self, kernel, carve, arguments, buffers, lifetimes, plan_layout, parallel, short_loops=False, column_loops=False
    ):
        self.kernel = kernel
        self.carve = carve
        self.parallel = parallel
        self.column_loops = column_loops
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
            _require_memory(4 * total, sizes)
            arena = np.empty(total, np.float32)
            self.arenas[key] = (arena, self.carve(arena, offsets, sizes))
        return self.arenas[key][1]

    def __call__(self, *arrays, split=None):
        """Run the kernel on `arrays`; `split` forces (True) or forbids (False) running it on several threads.

        By default, the batch is split across threads when each gets at least `min_rows` rows. With fewer,
        one thread runs the kernel and BLAS uses every core; but where a time loop splits its products'
        columns across threads (see `TimeLoops.scan`), the kernel's other work is split by rows as with a
        large batch (a sequence's input projection has a row per step), and BLAS keeps to one thread in the
        whole kernel: its threads spin a while after each product, and took the cores the loop's parts
        need, many times over.
        """
        if len(arrays) != len(self.arguments):
            raise TypeError(f"expected {len(self.arguments)} arrays, got {len(arrays)}")
        arrays = [
            np.ascontiguousarray(a, np.float32 if dtype == "f32" else np.int32)
            for a, (_, dtype, _) in zip(arrays, self.arguments)
        ]
        sizes = self.symbols(arrays)
        buffers = self.arena(sizes)
        threads, batch = numba.get_num_threads(), sizes.get("batch", 1)
        whole = product_limit(batch)  # each time loop multiplies the whole batch's rows at every step
        if not self.parallel or split is False:
            return self.kernel(buffers, 1, 1, whole, *arrays)
        if split is None and batch < self.min_rows * threads:
            if not self.column_loops:
                return self.kernel(buffers, 1, 1, whole, *arrays)
            with single_threaded_blas():
                return self.kernel(buffers, threads, threads, whole, *arrays)
        with single_threaded_blas():  # BLAS calls on threads of the kernel's must not start threads of their own
            return self.kernel(buffers, threads, 1, product_limit(-(-batch // threads)), *arrays)


def _require_memory(size, sizes):
    """Refuse an arena this machine's memory cannot hold before allocating it: the system would grant the
    allocation and kill the process when the pages are touched."""
    try:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return
    if size > available:
        given = ", ".join(f"{name}={value}" for name, value in sorted(sizes.items()))
        raise MemoryError(
            f"a call with {given} needs {size / 2**30:.2f} GB of buffers, more than this machine's "
            f"{available / 2**30:.2f} GB: use a smaller batch size"
        )


# Splitting a batch gives each thread a time loop over its rows, with single-threaded BLAS. A long
# time loop multiplies by weights prepared before it (see `loop_products`) at nearly the same rate
# from 2 rows up, so threads pay from a few rows each. A loop of a few steps multiplies whole weights,
# which BLAS runs slowly on few rows: there one thread with BLAS threading each product is faster.
MIN_ROWS_PER_THREAD = 32
MIN_ROWS_PER_THREAD_PREPARED = 8


# Some milliseconds of spinning (a pause instruction each time) before sleeping on the lock: a thread
# woken from sleep can start its chunk a millisecond or more late; without the pause, the spinning
# thread slows the other one when they share a core.
SPINS = 200_000

# Each helper's start flag, on a cache line of its own: `begin` arms it, and the caller's chunk, once
# compiled and without the GIL, sets it going (`start_helpers`). A helper that saw its flag while the
# caller still held the GIL would sleep on the GIL and wake late; started when the GIL is free, it
# takes it at once. One array for the process, never replaced: every generated module's kernels
# read the one they imported.
ARMED, GO = 1, 2
MAX_HELPERS = max(64, numba.config.NUMBA_NUM_THREADS)
HELPER_STARTS = np.zeros(LINE * MAX_HELPERS, np.int64)


@numba.njit(cache=True, nogil=True)
def start_helpers(starts, chunk):
    """From chunk 0 of a kernel's work: set going every helper thread armed for its other chunks."""
    if chunk != 0:
        return
    for slot in range(0, starts.size, LINE):
        if load_acquire(starts, slot) == ARMED:
            store_release(starts, slot, GO)


class ChunkThread:
    """A thread that runs one chunk of a kernel at a time.

    Each hand-over is a lock (what wakes a sleeping thread) and a flag both sides spin on for a while
    before sleeping, since a thread woken from sleep can start its chunk milliseconds late (see SPINS).
    """

    def __init__(self, slot: int):
        self.start, self.done = _thread.allocate_lock(), _thread.allocate_lock()
        self.start.acquire()
        self.done.acquire()
        self.slot = slot * LINE  # its start flag in HELPER_STARTS
        if HELPER_STARTS.size <= self.slot:
            raise RuntimeError(f"more than {MAX_HELPERS} helper threads")
        self.finished = np.zeros(1, np.int64)
        self.work, self.chunk, self.error = None, 0, None
        threading.Thread(target=self._serve, daemon=True, name="kdsl-chunks").start()

    def _serve(self):
        while True:
            spin_until(HELPER_STARTS, self.slot, GO, SPINS)
            self.start.acquire()
            HELPER_STARTS[self.slot] = 0
            try:
                self.work(self.chunk)
            except BaseException as error:  # handed to the caller, which raises it
                self.error = error
            self.finished[0] = 1
            self.done.release()

    def begin(self, work, chunk):
        self.work, self.chunk, self.error = work, chunk, None
        HELPER_STARTS[self.slot] = ARMED
        self.start.release()

    def finish(self):
        spin_until(self.finished, 0, 1, SPINS)
        self.done.acquire()
        self.finished[0] = 0
        if self.error is not None:
            raise self.error


CHUNK_THREADS: list[ChunkThread] = []
CHUNK_THREADS_FREE = threading.Lock()  # one caller at a time; another runs its chunks itself


def forget_chunk_threads():
    """In a forked child: the parent's threads are not there, so start new ones when needed."""
    global CHUNK_THREADS_FREE
    CHUNK_THREADS.clear()
    CHUNK_THREADS_FREE = threading.Lock()
    HELPER_STARTS[:] = 0


os.register_at_fork(after_in_child=forget_chunk_threads)


def run_chunks(count, work):
    """work(0), ..., work(count - 1) at once: the caller takes chunk 0, helper threads the others.

    Each chunk's work is a compiled function that releases the GIL and begins with `start_helpers`.
    Numba's `prange` would open the region faster, but compiles every function it calls into its own code
    again.
    """
    if count == 1 or not CHUNK_THREADS_FREE.acquire(blocking=False):
        for chunk in range(count):
            work(chunk)
        return
    try:
        _on_helpers(count, work)
    finally:
        CHUNK_THREADS_FREE.release()


def run_parts(parts, work, progress):
    """work(0, parts), ..., work(parts - 1, parts), each on a thread of its own: the parts of a time loop
    split by columns, which wait for each other at every step (`meet`, on `progress`). Without free helper
    threads (another caller has them), work(0, 1) runs the whole loop alone instead.
    """
    if parts == 1 or not CHUNK_THREADS_FREE.acquire(blocking=False):
        work(0, 1)
        return

    def part(index):
        try:
            work(index, parts)
        except BaseException:
            progress[parts * LINE] = 1  # the other parts stop waiting for this one
            raise

    try:
        _on_helpers(parts, part)
    finally:
        CHUNK_THREADS_FREE.release()


def _on_helpers(count, work):
    """work(0) on the caller and work(1), ..., work(count - 1) on helper threads; the first error once all end."""
    while len(CHUNK_THREADS) < count - 1:
        CHUNK_THREADS.append(ChunkThread(len(CHUNK_THREADS)))
    helpers = CHUNK_THREADS[: count - 1]
    for chunk, helper in enumerate(helpers, 1):
        helper.begin(work, chunk)
    try:
        work(0)
    finally:
        start_helpers(HELPER_STARTS, 0)  # those whose work did not start them (it failed first)
        errors = []
        for helper in helpers:  # every chunk ends before the buffers it writes are used again
            try:
                helper.finish()
            except BaseException as error:
                errors.append(error)
    if errors:
        raise errors[0]


@contextlib.contextmanager
def single_threaded_blas():
    """Every BLAS loaded kept to one thread: two thread pools fighting make a step many times slower.

    Through each library's own setter, cheaper than threadpoolctl's `limit`.
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
