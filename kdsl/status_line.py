"""`StatusLine`: one line saying what slow work in the calling thread is doing, on stderr, while it runs.

On stderr, as other tools write their progress, so that stdout keeps only results (a command's report,
the training log): `kdsl ... > log` still shows the line on the terminal, and a pipe reading stdout never
sees it. A thread redraws it in place every half second on a terminal, and clears it at the end. Off a
terminal (a log file, a pipe, CI) redraws would pile up as lines: the line is written once, when first due,
and the end gets one line. Work that ends within `delay` seconds, or while `describe` has nothing to say,
shows nothing.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO


class StatusLine:
    """A context manager around slow work: `describe(elapsed)` says what it is doing (None: nothing worth
    showing yet), and `finished(elapsed)`, when given, the line that replaces it at the end, if it was shown."""

    delay = 1.0  # seconds of work before the line may appear: none for a quick load
    interval = 0.5  # seconds between redraws

    def __init__(
        self,
        describe: Callable[[float], str | None],
        finished: Callable[[float], str] | None = None,
        stream: TextIO | None = None,
    ):
        self.describe, self.finished = describe, finished
        self.stream = sys.stderr if stream is None else stream
        self.terminal = _is_terminal(self.stream)
        self.shown = False  # whether the line was written
        self._width = 0  # the length of the line on the terminal now, to clear
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="kdsl-status")
        self._started = 0.0

    def __enter__(self) -> StatusLine:
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Stop the thread (on errors and interrupts too) before anything else is written, then end the line."""
        self._stop.set()
        self._thread.join()
        self._draw("")
        if self.shown and kind is None and self.finished is not None:
            self._write(self.finished(time.perf_counter() - self._started) + "\n")

    def _run(self) -> None:
        if self._stop.wait(self.delay):
            return
        while True:
            text = self.describe(time.perf_counter() - self._started)
            if text is not None and not self.terminal:
                self._write(text + "\n")
                self.shown = True
                return
            if text is not None:
                self._draw(text)
                self.shown = True
            if self._stop.wait(self.interval):
                return

    def _draw(self, text: str) -> None:
        """Write `text` over the line on the terminal (cut to its width, as a longer line would wrap)."""
        if not self.terminal or not (text or self._width):
            return
        text = text[: shutil.get_terminal_size().columns - 1]
        self._write("\r" + text.ljust(self._width) + ("\r" if not text else ""))
        self._width = len(text)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no such method, or a closed stream
        return False
