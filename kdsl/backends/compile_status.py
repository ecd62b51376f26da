"""`CompileStatus`: the status line (`kdsl.status_line`) of a model's kernels compiling before their first call.

Numba compiles a function at its first call, or loads it from its disk cache. The line appears only once a
function really compiles in the thread warming the model up, as Numba's `numba:compile` event tells (a load
from the cache raises none): kernels from the cache show nothing. It names the step (an entry point, the
optimizer's update), how many of the step's kernels are ready, the layers of the one compiling, and the time.
NVIDIA's CUDA target raises its events through an event module of its own, which takes no listener to
`numba:compile`: CUDA kernels compile without a line.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numba.core.event

from kdsl.status_line import StatusLine


@dataclass(frozen=True)
class Kernel:
    """A compiled function of a generated module, and the layers it computes for, as the status line names it."""

    function: Any  # a Numba dispatcher
    label: str = ""

    @property
    def ready(self) -> bool:
        """Compiled, or loaded from the cache."""
        return bool(self.function.overloads)


class CompileStatus:
    """A context manager around a model's warm-up; `step` tells it what is warming up. Silent unless `verbose`;
    with `summary`, a line saying how long the compile took replaces the status line, where one was shown."""

    def __init__(self, model: str, verbose: bool, summary: bool = True):
        self.model = model
        self.line = StatusLine(self.describe, self.finished if summary else None) if verbose else None
        self.compiled = False  # whether a function compiled in the warming thread
        self._step, self._kernels = "", []
        self._compiling: Any = None  # the function whose compile is under way, outermost (it compiles its callees)
        self._depth = 0
        self._thread: int | None = None  # the warming thread
        self._exits = ExitStack()

    def __enter__(self) -> CompileStatus:
        if self.line is not None:
            self._thread = threading.get_ident()
            self._exits.enter_context(numba.core.event.install_listener("numba:compile", _Listener(self)))
            self._exits.enter_context(self.line)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._exits.__exit__(kind, error, traceback)

    def step(self, name: str, kernels: Sequence[Kernel] | None) -> None:
        """Now warming up `name`, which compiles `kernels` (None: not known)."""
        self._step, self._kernels = name, list(kernels or [])

    def describe(self, elapsed: float) -> str | None:
        """`compiling MnistLSTM: train_step 3/9 kernels (lstm) 12.4 s`, once something compiles."""
        if not self.compiled:
            return None
        text = f"compiling {self.model}: {self._step}"
        if self._kernels:
            text += f" {sum(k.ready for k in self._kernels)}/{len(self._kernels)} kernels"
        compiling = self._compiling
        label = next((k.label for k in self._kernels if k.function is compiling), "")
        return f"{text}{f' ({label})' if label else ''} {elapsed:.1f} s"

    def finished(self, elapsed: float) -> str:
        return f"compiled {self.model} in {elapsed:.1f} s"

    def started(self, function: Any) -> None:
        """A compile began in some thread (those of other threads are not this model's)."""
        if threading.get_ident() == self._thread:
            self._depth += 1
            if self._depth == 1:
                self._compiling, self.compiled = function, True

    def ended(self) -> None:
        if threading.get_ident() == self._thread:
            self._depth -= 1
            if self._depth == 0:
                self._compiling = None


class _Listener(numba.core.event.Listener):
    """Hands Numba's compile events to a `CompileStatus`."""

    def __init__(self, status: CompileStatus):
        self.status = status

    def on_start(self, event: numba.core.event.Event) -> None:
        self.status.started(event.data["dispatcher"])

    def on_end(self, event: numba.core.event.Event) -> None:
        self.status.ended()
