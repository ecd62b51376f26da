"""Errors that point at the text the user wrote.

Every problem kdsl reports about a model is a `KdslError`. When the problem has a
place in a `.kd` file, the error carries a `Span` and renders as

    model.kd:3:13: error: unknown layer `lstn`
        h = lstn(pixels, units=64)
            ^^^^
    hint: did you mean `lstm`?
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Span:
    """A stretch of source text: 1-based line and column of its first and last character."""

    file: str
    line: int
    column: int
    end_line: int
    end_column: int
    source: str | None = None  # the whole text, kept to show the offending line

    def source_line(self) -> str | None:
        if self.source is None:
            return None
        lines = self.source.split("\n")  # the parser counts lines at "\n" only
        return lines[self.line - 1].rstrip("\r") if 0 < self.line <= len(lines) else None


class KdslError(Exception):
    """A user-facing error: a message, an optional place in the source and an optional hint."""

    kind = "error"

    def __init__(self, message: str, span: Span | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.hint = hint

    def at(self, span: Span | None) -> KdslError:
        """Attach a place, unless the error already knows a more precise one."""
        if self.span is None:
            self.span = span
        return self

    def __str__(self) -> str:
        return self.render()

    def render(self) -> str:
        span = self.span
        head = f"{self.kind}: {self.message}"
        if span is None:
            lines = [head]
        else:
            lines = [f"{span.file}:{span.line}:{span.column}: {head}"]
            text = span.source_line()
            if text is not None:
                text = text.replace("\t", " ")  # one column per character, as the parser counts
                width = span.end_column - span.column + 1 if span.end_line == span.line else 1
                width = max(1, min(width, len(text) - span.column + 1))
                lines.append(f"    {text}")
                lines.append("    " + " " * (span.column - 1) + "^" * width)
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


class KdslSyntaxError(KdslError):
    """The text does not follow the grammar."""

    kind = "syntax error"


class KdslNameError(KdslError):
    """A name (layer, value, argument, model) that is not defined."""

    kind = "name error"


class KdslArgumentError(KdslError):
    """A layer, loss or optimizer argument that is missing, unknown or of the wrong kind."""

    kind = "argument error"


class KdslShapeError(KdslError):
    """Shapes or dtypes that do not fit together."""

    kind = "shape error"


class KdslUnsupportedError(KdslError):
    """A Keras feature kdsl refuses rather than silently ignores."""

    kind = "unsupported"


def did_you_mean(name: str, candidates: Iterable[str]) -> str | None:
    """The hint for a misspelled name, or None when nothing is close."""
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    if not close:
        close = difflib.get_close_matches(name.lower(), [c.lower() for c in candidates], n=1, cutoff=0.6)
        close = [c for c in candidates if c.lower() in close][:1]
    return f"did you mean `{close[0]}`?" if close else None
