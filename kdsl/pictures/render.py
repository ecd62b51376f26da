"""A picture's DOT text to a file, its format by the file's suffix: `.dot` as text, others drawn by Graphviz."""

from __future__ import annotations

import shutil
from pathlib import Path

from kdsl.errors import KdslArgumentError, KdslError
from kdsl.pictures.dot import Dot

FORMATS = ("dot", "svg", "png", "pdf")
INSTALL_GRAPHVIZ = (
    "install Graphviz: `apt-get install graphviz` (Debian, Ubuntu), `brew install graphviz` (macOS), "
    "or see https://graphviz.org/download/; a .dot file needs none"
)


def find_dot() -> str | None:
    """Where Graphviz's `dot` program is, if it is installed."""
    return shutil.which("dot")


def write_picture(dot: Dot, to_file: str | Path) -> Path:
    """Write `dot` to `to_file`: DOT text for `.dot`, else an image Graphviz draws (PNG when there is no suffix,
    as Keras's `plot_model` does)."""
    path = Path(to_file)
    extension = path.suffix[1:].lower() or "png"
    if extension not in FORMATS:
        choices = ", ".join("." + f for f in FORMATS)
        raise KdslArgumentError(f"cannot write a picture as `.{extension}` ({path})", hint=f"use one of {choices}")
    if extension == "dot":
        path.write_text(dot.source(), encoding="utf-8")
        return path
    if find_dot() is None:
        raise KdslError(f"drawing {path} needs Graphviz's `dot` program, which is not installed", hint=INSTALL_GRAPHVIZ)
    try:
        import graphviz
    except ImportError as error:
        raise KdslError(
            f"drawing {path} needs the `graphviz` Python package", hint="pip install 'kdsl[plot]'"
        ) from error
    try:
        image = graphviz.pipe("dot", extension, dot.source().encode("utf-8"), quiet=True)
    except graphviz.CalledProcessError as error:
        raise KdslError(f"Graphviz could not draw {path}: {error.stderr.decode(errors='replace').strip()}") from error
    path.write_bytes(image)
    return path
