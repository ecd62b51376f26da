"""Compiling shows: one status line on stderr while kernels compile (redrawn on a terminal, written once off it),
nothing for kernels from the cache or at verbose=0, and training's clock starts after the compile."""

from __future__ import annotations

import io
import re
import sys
import threading
import types
from concurrent.futures import ThreadPoolExecutor

import numba.core.event
import numpy as np
import pytest

import kdsl
from kdsl import callbacks
from kdsl.backends.compiled import CompiledModel
from kdsl.cli import main
from kdsl.lang import load
from kdsl.runtime import training
from kdsl.status_line import StatusLine

SOURCE = """model Tiny(x: f32[batch, 3]) -> y {
    y = x |> dense(4, activation=tanh) |> dense(2, activation=softmax)
}
train Tiny { loss = sparse_categorical_crossentropy
             optimizer = sgd(learning_rate=0.1) }"""
X = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
Y = np.arange(8) % 2


def _model() -> kdsl.Model:
    model = kdsl.Model.from_graph(load(SOURCE, "tiny.kd").models["Tiny"])
    model.compile()
    return model


@pytest.fixture
def cold(tmp_path, monkeypatch):
    """An empty kernel cache, as a new process sees it, and a status line due at once (the tests need no delay)."""
    monkeypatch.setenv("KDSL_CACHE_DIR", str(tmp_path / "cache"))
    for name in [name for name in sys.modules if name.startswith("kdsl_generated_")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(StatusLine, "delay", 0.0)
    monkeypatch.setattr(StatusLine, "interval", 0.01)
    return tmp_path / "cache"


class _Compiles(callbacks.Callback):
    """Counts the functions Numba compiles between the start and the end of training."""

    def __init__(self):
        self.count = 0
        outer = self

        class Listener(numba.core.event.Listener):
            def on_start(self, event):
                outer.count += 1

            def on_end(self, event):
                pass

        self.listener = Listener()

    def on_train_begin(self, logs=None):
        numba.core.event.register("numba:compile", self.listener)

    def on_train_end(self, logs=None):
        numba.core.event.unregister("numba:compile", self.listener)


def test_a_cold_fit_says_what_compiles_once_then_trains_without_compiling(cold, capsys):
    compiles = _Compiles()
    _model().fit(X, Y, batch_size=4, epochs=1, verbose=1, validation_split=0.25, callbacks=[compiles])
    out, err = capsys.readouterr()
    assert compiles.count == 0  # training step, forward pass (validation) and optimizer compiled before
    lines = err.splitlines()
    assert len(lines) == 2 and "\r" not in err  # captured: no terminal, so one line at the start, one at the end
    assert re.fullmatch(r"compiling Tiny: (train_step|forward) \d+/\d+ kernels( \([\w, ]+\))? [\d.]+ s", lines[0])
    assert re.fullmatch(r"compiled Tiny in [\d.]+ s", lines[1])
    assert out.startswith("Epoch 1/1\n2/2 [")

    for name in [name for name in sys.modules if name.startswith("kdsl_generated_")]:
        del sys.modules[name]  # a new process: the kernels come from the disk cache, with nothing to say
    _model().fit(X, Y, batch_size=4, epochs=1, verbose=1)
    assert capsys.readouterr().err == ""


def test_verbose_0_prints_nothing(cold, capsys):
    _model().fit(X, Y, epochs=1, verbose=0)
    model = kdsl.Model.from_graph(load(SOURCE, "tiny.kd").models["Tiny"])  # compiles a forward pass alone
    np.testing.assert_array_equal(model.predict(X, batch_size=3, verbose=0), model.predict_on_batch(X))
    assert capsys.readouterr() == ("", "")
    assert len(list(cold.glob("kdsl_*.py"))) == 2  # both modules were compiled, silently


def test_kdsl_compile_names_the_model_while_compiling(cold, tmp_path, capsys):
    path = tmp_path / "tiny.kd"
    path.write_text(SOURCE)
    assert main(["compile", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("compiling Tiny: ") and err.count("\n") == 1  # its own report ends it
    assert out.startswith("compiled Tiny: forward, train_step in ")
    assert main(["compile", str(path)]) == 0
    assert capsys.readouterr().err == ""


def test_threads_predicting_on_a_cold_model_wait_for_one_compile(cold, capsys):
    model = kdsl.Model.from_graph(load(SOURCE, "tiny.kd").models["Tiny"])
    batches = [X[i : i + 2] for i in range(0, 8, 2)] * 4
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(model.predict, batches))
    expected = [model.predict(b, verbose=0) for b in batches]
    for got, want in zip(results, expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert capsys.readouterr().err.count("compiling Tiny: forward") == 1


def test_the_first_epoch_s_time_leaves_the_compile_out(monkeypatch, capsys):
    """A compile taking 1000 s on a clock of the test's own shows in no step time, epoch time or callback."""
    clock = [0.0]
    monkeypatch.setattr(training, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    warm_up = CompiledModel.warm_up

    def slow_warm_up(self, *args, **kwargs):
        warm_up(self, *args, **kwargs)
        clock[0] += 1000.0

    monkeypatch.setattr(CompiledModel, "warm_up", slow_warm_up)

    class Clock(callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.began = clock[0]

    started = Clock()
    _model().fit(X, Y, batch_size=4, epochs=1, verbose=2, callbacks=[started])
    seconds, per_step = re.search(r"2/2 \[=+\] - (\d+)s (\d+)ms/step", capsys.readouterr().out).groups()
    assert (int(seconds), int(per_step)) == (0, 0)  # the clock moved only during the compile
    assert started.began == 1000.0  # compiled before training began


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def prompt(monkeypatch):
    """A status line due at once and redrawn without pause."""
    monkeypatch.setattr(StatusLine, "delay", 0.0)
    monkeypatch.setattr(StatusLine, "interval", 0.0)


def test_on_a_terminal_the_line_is_redrawn_in_place_then_replaced(prompt):
    stream, drawn = _Terminal(), threading.Event()
    text = "compiling Tiny: train_step 1/2 kernels (dense) 0.1 s"
    with StatusLine(lambda elapsed: drawn.set() or text, lambda elapsed: "compiled Tiny in 0.2 s", stream):
        assert drawn.wait(5)
    written = stream.getvalue()
    assert written.startswith("\r" + text)
    assert "\n" not in written.removesuffix("compiled Tiny in 0.2 s\n")  # redrawn, never a new line
    assert written.endswith("\r" + " " * len(text) + "\rcompiled Tiny in 0.2 s\n")  # cleared, then the last line


@pytest.mark.parametrize("interruption", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_compile_clears_the_line_and_stops_its_thread(prompt, interruption):
    stream, drawn = _Terminal(), threading.Event()
    with pytest.raises(interruption), StatusLine(lambda elapsed: drawn.set() or "compiling", None, stream) as line:
        assert drawn.wait(5)
        raise interruption
    assert not line._thread.is_alive()
    assert stream.getvalue().endswith("\r         \r")  # cleared, and no final line after an error


def test_nothing_is_shown_for_work_that_ends_before_the_delay_or_has_nothing_to_say(monkeypatch):
    quick, idle, asked = _Terminal(), _Terminal(), threading.Event()
    with StatusLine(lambda elapsed: "compiling", lambda elapsed: "compiled", quick):
        pass  # within the delay
    monkeypatch.setattr(StatusLine, "delay", 0.0)
    with StatusLine(lambda elapsed: asked.set(), lambda elapsed: "compiled", idle):
        assert asked.wait(5)
    assert quick.getvalue() == idle.getvalue() == ""
