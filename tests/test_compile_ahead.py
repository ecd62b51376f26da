"""A model's later entry points compile in a second process while this one compiles the first
(`kdsl.backends.compile_ahead`); this process then loads them from the disk cache. Whatever the second process
does, the numbers are the NumPy backend's: it only ever fills the cache."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from test_cpu_backend import assert_close

from kdsl.backends import compile_ahead
from kdsl.lang import load
from kdsl.pipeline import compile_model

TEXT = """
model Ahead(x: f32[batch, 16, 3]) -> y {
    y = x |> gru(6) |> dense(2, activation=softmax)
}
train Ahead { loss = sparse_categorical_crossentropy }
"""


@pytest.fixture
def started(monkeypatch, tmp_path):
    """A kernel cache of its own (nothing of this model cached), and the second processes started, as commands."""
    monkeypatch.setenv("KDSL_CACHE_DIR", str(tmp_path / "cache"))
    commands = []
    popen = subprocess.Popen

    def recorded(command, **options):
        commands.append(command)
        return popen(command, **options)

    monkeypatch.setattr(compile_ahead.subprocess, "Popen", recorded)
    return commands


def _checked(compiled, reference) -> None:
    x = np.random.default_rng(0).standard_normal((4, 16, 3)).astype(np.float32)
    labels = np.array([0, 1, 1, 0], np.int32)
    assert_close(reference.forward(x)[0], compiled.forward(x)[0])
    assert compiled.train_step([x], [labels]) == pytest.approx(reference.train_step([x], [labels]), rel=1e-5)
    for expected, actual in zip(reference.grads, compiled.grads, strict=True):
        assert_close(expected, actual)


def _pair(seed: int):
    graph = load(TEXT.replace("gru(6)", f"gru({6 + seed})"), "ahead.kd").models["Ahead"]  # a module of its own
    compiled, reference = compile_model(graph, target="cpu"), compile_model(graph, target="numpy")
    compiled.weights = [w.copy() for w in reference.weights]
    return compiled, reference


def test_the_second_entry_compiles_in_another_process_into_the_cache(started):
    compiled, reference = _pair(0)
    compiled.warm_up(["forward", "train_step"])
    assert len(started) == 1  # one second process, for the forward pass (train_step has more kernels)
    assert compile_ahead._cached(compiled.runner.module, "forward")
    _checked(compiled, reference)
    again, _ = _pair(0)  # the same module, its entries cached: no second process
    again.warm_up(["forward", "train_step"])
    assert len(started) == 1


def test_a_second_process_that_fails_leaves_the_compile_here(started, monkeypatch):
    monkeypatch.setattr(compile_ahead.sys, "executable", "false")  # a process that ends at once, having done nothing
    compiled, reference = _pair(1)
    compiled.warm_up(["forward", "train_step"])
    assert len(started) == 1
    _checked(compiled, reference)


def test_one_entry_needs_no_second_process(started):
    compiled, _ = _pair(2)
    compiled.warm_up(["forward"])
    assert started == []
