"""The `.kd` language: parse text, elaborate it into IR graphs, infer their shapes."""

from __future__ import annotations

from pathlib import Path

from kdsl.lang.elaborate import Program, elaborate
from kdsl.lang.parser import parse, parse_file
from kdsl.passes.infer import infer_shapes

__all__ = ["Program", "load", "load_file", "parse", "parse_file"]


def load(text: str, file: str = "<string>") -> Program:
    """Text to checked IR: every model parsed, elaborated and shape-inferred."""
    return _checked(elaborate(parse(text, file)))


def load_file(path: str | Path) -> Program:
    return _checked(elaborate(parse_file(path)))


def _checked(program: Program) -> Program:
    for graph in program.models.values():
        infer_shapes(graph)
    return program
