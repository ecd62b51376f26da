"""Time loops split by columns: at a batch too small for a chunk of rows a thread, each thread runs the
whole loop as one part of it, computing its share of every step's products (`Emitter.scan`).

The weights here are small, so the size threshold is lowered to let every loop split; the results must
equal the NumPy backend's, forward and in a training step (its stacked values, final states and bias sums
come from the first part only).
"""

from __future__ import annotations

import contextlib
import re
import threading

import numba
import numpy as np
import pytest
from test_cpu_backend import assert_close

from kdsl.backends.cpu import policy
from kdsl.backends.cpu.support import entry
from kdsl.backends.cpu.support.entry import run_parts
from kdsl.backends.cpu.support.spin import LINE, meet, progress_counters
from kdsl.explain import explain
from kdsl.lang import load
from kdsl.pipeline import compile_model, compile_programs

TEXT = """
model Split(ids: i32[batch, time]) -> y {
    y = embedding(ids, 50, 8) |> gru(16, return_sequences=true) |> lstm(12) |> dense(3, activation=softmax)
}
train Split { loss = sparse_categorical_crossentropy }
"""

two_threads = pytest.mark.skipif(numba.get_num_threads() < 2, reason="needs two threads")


@pytest.fixture(scope="module")
def pair():
    graph = load(TEXT, "split.kd").models["Split"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(policy, "MIN_SPLIT_WEIGHT", 0)
        compiled = compile_model(graph, target="cpu")
    reference = compile_model(graph, target="numpy")
    compiled.weights = [w.copy() for w in reference.weights]
    return reference, compiled


def _batch(batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 50, (batch, 20)).astype(np.int32), rng.integers(0, 3, batch).astype(np.int32)


@two_threads
def test_small_batches_split_the_loops_by_columns(pair):
    _, compiled = pair
    with open(compiled.runner.module.__file__) as source:
        text = source.read()
    # one call for each time loop `splits_columns` picks (the def of `run_parts` is no longer in the module's text)
    assert len(re.findall(r"^\s+run_parts\(", text, flags=re.M)) == 5


def test_explain_says_which_loops_split_by_columns():
    """A loop over a weight of 1 MB (an LSTM(256)'s recurrent kernel) splits at small batches; a smaller one not."""
    text = """model Two(x: f32[batch, 20, 8]) -> y {
        y = x |> lstm(256, return_sequences=true) |> lstm(64)
    }"""
    graph = load(text, "two.kd").models["Two"]
    compilation = compile_programs(graph, target="cpu", training=False)
    loops = [line for line in explain(compilation, batch=1).splitlines() if "time loop" in line]
    assert ["columns" in line for line in loops] == [True, False]


@two_threads
@pytest.mark.parametrize("batch", [1, 3])
def test_forward_matches_numpy(pair, batch):
    reference, compiled = pair
    ids, _ = _batch(batch)
    assert_close(reference.forward(ids)[0], compiled.forward(ids)[0])


@two_threads
@pytest.mark.parametrize("batch", [1, 3])
def test_train_step_matches_numpy(pair, batch):
    reference, compiled = pair
    ids, labels = _batch(batch, seed=batch)
    loss_reference, loss_compiled = reference.train_step([ids], [labels]), compiled.train_step([ids], [labels])
    assert loss_compiled == pytest.approx(loss_reference, rel=1e-5)
    for expected, actual in zip(reference.grads, compiled.grads, strict=True):
        assert_close(expected, actual)


@two_threads
def test_blas_keeps_to_one_thread_around_loops_split_by_columns(pair, monkeypatch):
    """BLAS's threads spin after each product, and took the core a part of a loop needed (see EntryPoint)."""
    reference, compiled = pair
    entered = []

    @contextlib.contextmanager
    def recorded():
        entered.append(True)
        yield

    monkeypatch.setattr(entry, "single_threaded_blas", recorded)
    ids, _ = _batch(1)
    assert_close(reference.forward(ids)[0], compiled.forward(ids)[0])
    assert entered


@two_threads
def test_busy_helper_threads_leave_the_loop_whole(pair):
    """Another caller holds the helper threads: one thread runs every part's columns, with the same result."""
    reference, compiled = pair
    ids, _ = _batch(2)
    free = entry.CHUNK_THREADS_FREE
    assert free.acquire(blocking=False)
    try:
        assert_close(reference.forward(ids)[0], compiled.forward(ids)[0])
    finally:
        free.release()


@numba.njit(nogil=True)
def _meet_often(progress, part, parts, times):
    for _ in range(times):
        meet(progress, part, parts)


def test_a_failing_part_stops_the_others_waiting():
    """Part 1 fails before its loop starts: part 0 must not wait for it at every step forever, and the caller
    gets the error."""

    def work(part, parts):
        if part == 1:
            raise RuntimeError("part 1 failed")
        _meet_often(progress, part, parts, 1000)

    progress = progress_counters(2)
    done = threading.Event()

    def call():
        with pytest.raises(RuntimeError, match="part 1 failed"):
            run_parts(2, work, progress)
        done.set()

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    assert done.wait(timeout=60)


@numba.njit(nogil=True)
def _meet_and_look(progress, part, parts, times):
    """Meet `times` times; count the meetings after which the other part was not between this one's count
    and one more (it may have arrived at the next meeting already, not further)."""
    wrong = 0
    for k in range(1, times + 1):
        meet(progress, part, parts)
        other = progress[(1 - part) * LINE]
        wrong += not k <= other <= k + 1
    return wrong


def test_parts_meet_at_every_step():
    """No part passes a meeting before every part has reached it, nor goes on further than the next one."""
    progress, wrong = progress_counters(2), []

    def work(part, parts):
        wrong.append(_meet_and_look(progress, part, parts, 2000))

    run_parts(2, work, progress)
    assert wrong == [0, 0]
    assert progress[0] == progress[LINE] == 2000
