"""Indented source text, the part the CPU and CUDA code generators share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class SourceWriter:
    """Lines of code at the current depth, blocks that indent them, and fresh names.

    A mixin: the generator provides `lines`, `_depth` (in indentation levels) and `_count`.
    """

    lines: list[str]
    _depth: int
    _count: int

    def line(self, text: str) -> None:
        self.lines.append("    " * self._depth + text)

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        self.line(header)
        self._depth += 1
        yield
        self._depth -= 1

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"
