"""Training curves: the loss and each metric by epoch, training and validation (`val_*`) on one panel per quantity,
as a matplotlib Figure, optionally written to a PNG, SVG or PDF file.

matplotlib is an optional extra (`pip install 'kdsl[plot]'`), imported only here and only when a plot is asked for.
The figure is made without pyplot, so nothing is shown and no global state changes: a file is drawn by the
non-interactive Agg canvas (or matplotlib's SVG / PDF writers).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from kdsl.errors import KdslArgumentError, KdslError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Series = tuple[Sequence[int], Sequence[float]]  # the epochs (from 1) a quantity was logged at, and its values

FORMATS = ("png", "svg", "pdf")
PANEL_SIZE = (4.5, 3.2)  # inches
MOST_COLUMNS = 3
DPI = 120
VALIDATION_PREFIX = "val_"


def plot_curves(series: Mapping[str, Series], to_file: str | Path | None = None) -> Figure:
    """One panel per quantity (`loss`, `accuracy`, ...), its training and validation (`val_<name>`) lines together
    against the epoch; written to `to_file` when given (its suffix picks PNG, SVG or PDF). Returns the Figure."""
    if not series:
        raise KdslError("no epochs to plot: the training history is empty", hint="plot after `fit` ran an epoch")
    for key, (epochs, values) in series.items():
        if len(epochs) != len(values):
            raise KdslArgumentError(f"`{key}` has {len(values)} values for {len(epochs)} epochs")
    file_format = _format(to_file) if to_file is not None else None
    quantities = _quantities(series)
    figure, axes = _panels(len(quantities))
    for (quantity, lines), panel in zip(quantities.items(), axes):
        for label, key in lines:
            epochs, values = series[key]
            panel.plot(epochs, values, marker="o", markersize=4, label=label)
        panel.set_title(quantity)
        panel.set_xlabel("epoch")
        panel.xaxis.get_major_locator().set_params(integer=True)
        panel.grid(alpha=0.3)
        panel.legend()
    if file_format is not None:
        _write(figure, Path(to_file), file_format)
    return figure


def check_can_write(to_file: str | Path) -> None:
    """Refuse before a long training rather than after it: a name whose suffix is no format, or no matplotlib."""
    _format(to_file)
    _matplotlib()


def _quantities(series: Mapping[str, Series]) -> dict[str, list[tuple[str, str]]]:
    """Each quantity's lines, `(label, key)`, in the order the quantities were first logged."""
    quantities: dict[str, list[tuple[str, str]]] = {}
    for key in series:
        validation = key.startswith(VALIDATION_PREFIX)
        quantity = key.removeprefix(VALIDATION_PREFIX)
        quantities.setdefault(quantity, []).append(("validation" if validation else "training", key))
    for lines in quantities.values():
        lines.sort(key=lambda line: line[0] == "validation")  # training first: the same colours on every panel
    return quantities


def _format(to_file: str | Path) -> str:
    suffix = Path(to_file).suffix.lower().removeprefix(".")
    if suffix not in FORMATS:
        raise KdslArgumentError(f"cannot tell how to write curves to {to_file}: the name must end in "
                                f"{', '.join('.' + f for f in FORMATS)}")  # fmt: skip
    return suffix


def _matplotlib() -> ModuleType:
    try:
        import matplotlib
    except ImportError:
        raise KdslError("plotting training curves needs matplotlib, which is not installed",
                        hint="pip install 'kdsl[plot]'") from None  # fmt: skip
    return matplotlib


def _panels(count: int) -> tuple[Figure, list]:
    """A figure with `count` axes, up to MOST_COLUMNS a row."""
    _matplotlib()  # missing: said plainly, even when an earlier plot made the figure class
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    columns = min(count, MOST_COLUMNS)
    rows = math.ceil(count / columns)
    figure = _figure_class()(figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(rows, columns, squeeze=False).flat)
    for unused in axes[count:]:
        unused.remove()
    return figure, axes[:count]


@functools.cache
def _figure_class() -> type[Figure]:
    """matplotlib's Figure, which a notebook also shows as a cell's value when no pyplot figure has turned on
    matplotlib's inline display yet."""
    from matplotlib.figure import Figure

    class CurvesFigure(Figure):
        def _repr_png_(self) -> bytes:
            png = io.BytesIO()
            self.savefig(png, format="png", dpi=DPI)
            return png.getvalue()

    return CurvesFigure


def _write(figure: Figure, path: Path, file_format: str) -> None:
    """Text stays text in an SVG (searchable, and drawn in the reader's font)."""
    with _matplotlib().rc_context({"svg.fonttype": "none"}):
        figure.savefig(path, format=file_format, dpi=DPI)
