"""`run_chunks`: the chunks of a batch that generated kernels hand to threads."""

import threading

import numba
import numpy as np
import pytest

from kdsl.backends.cpu import entry


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
