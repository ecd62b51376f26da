"""`run_chunks`: the chunks of a batch that generated kernels hand to threads."""

import threading

import numba
import numpy as np
import pytest

from kdsl.backends.cpu.support import entry
from kdsl.backends.cpu.support.spin import spin_until


@numba.njit(nogil=True, cache=True)
def _square_rows(x, out, lo, hi):
    for i in range(lo, hi):
        out[i] = x[i] * x[i]


def _squares(x: np.ndarray, count: int) -> np.ndarray:
    out = np.full_like(x, np.nan)
    seen = []

    def work(chunk):
        seen.append(chunk)
        _square_rows(x, out, chunk * len(x) // count, (chunk + 1) * len(x) // count)

    entry.run_chunks(count, work)
    assert sorted(seen) == list(range(count))  # each chunk once
    return out


@pytest.mark.parametrize("count", [1, 2, 3, 5])
def test_every_chunk_runs_once(count):
    x = np.arange(1000, dtype=np.float64)
    np.testing.assert_array_equal(_squares(x, count), x * x)


def test_a_chunk_error_reaches_the_caller_after_every_chunk_ends():
    finished = []

    def work(chunk):
        if chunk == 1:
            raise IndexError("token id out of range")
        finished.append(chunk)

    with pytest.raises(IndexError, match="token id"):
        entry.run_chunks(3, work)
    assert sorted(finished) == [0, 2]
    np.testing.assert_array_equal(_squares(np.ones(10), 2), np.ones(10))  # the threads still serve


def test_callers_on_two_threads_both_get_their_results():
    xs = [np.arange(4000, dtype=np.float64) + k for k in range(2)]
    results = [None, None]

    def call(k):
        for _ in range(20):
            results[k] = _squares(xs[k], 2)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, result in zip(xs, results):
        np.testing.assert_array_equal(result, x * x)


def test_a_forked_child_starts_threads_of_its_own():
    _squares(np.ones(4), 2)  # the parent's helper threads exist
    parent = list(entry.CHUNK_THREADS)
    entry.forget_chunk_threads()  # what a forked child runs
    np.testing.assert_array_equal(_squares(np.arange(6.0), 2), np.arange(6.0) ** 2)
    assert entry.CHUNK_THREADS and not set(entry.CHUNK_THREADS) & set(parent)


def test_the_first_chunk_sets_the_armed_helpers_going():
    """`begin` arms a helper; chunk 0's compiled work sets it going, where the GIL is free for it to take."""
    line = entry.LINE
    starts = np.zeros(3 * line, np.int64)
    starts[0], starts[2 * line] = entry.ARMED, entry.GO
    entry.start_helpers(starts, 1)  # another chunk's work leaves the flags alone
    assert starts[0] == entry.ARMED
    entry.start_helpers(starts, 0)
    assert (starts[::line] == [entry.GO, 0, entry.GO]).all()  # an idle helper stays idle


@numba.njit(nogil=True)
def _wait_for(starts, flag, spins):
    """Chunk 0 of a kernel: start the helpers, then spin (without the GIL) until another chunk ran."""
    entry.start_helpers(starts, 0)
    return spin_until(flag, 0, 1, spins)


def test_a_helper_runs_its_chunk_while_the_caller_still_runs_its_own():
    flag, overlapped = np.zeros(1, np.int64), []

    def work(chunk):
        if chunk == 0:
            overlapped.append(_wait_for(entry.HELPER_STARTS, flag, 10**9))
        else:
            flag[0] = 1

    entry.run_chunks(2, work)
    assert overlapped == [True]
