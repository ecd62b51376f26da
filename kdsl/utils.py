"""Keras's `keras.utils` helpers that models' data needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdsl.errors import KdslArgumentError
from kdsl.ir.graph import Graph
from kdsl.model import Model, Sequential
from kdsl.pictures.model_graph import Options, model_to_dot
from kdsl.pictures.render import write_picture

__all__ = ["plot_model", "to_categorical"]


def to_categorical(x: Any, num_classes: int | None = None) -> np.ndarray:
    """Class ids as one-hot rows, as Keras's: a trailing axis of 1 is dropped first; `num_classes` defaults to
    the largest id + 1."""
    ids = np.asarray(x, dtype=np.int64)
    shape = ids.shape[:-1] if ids.ndim > 1 and ids.shape[-1] == 1 else ids.shape
    ids = ids.reshape(-1)
    classes = int(num_classes) if num_classes else (int(ids.max()) + 1 if ids.size else 0)
    if ids.size and (ids.min() < 0 or ids.max() >= classes):
        raise KdslArgumentError(f"class ids must lie in [0, {classes}), got {ids.min()}..{ids.max()}")
    categorical = np.zeros((ids.size, classes))
    categorical[np.arange(ids.size), ids] = 1
    return categorical.reshape((*shape, classes))


def plot_model(
    model: Model | Graph,
    to_file: str | Path = "model.png",
    show_shapes: bool = False,
    show_dtype: bool = False,
    show_layer_names: bool = False,
    rankdir: str = "TB",
    expand_nested: bool = False,
    dpi: int = 200,
    show_layer_activations: bool = False,
    show_trainable: bool = False,
    splines: str = "ortho",
) -> None:
    """Draw the model's layers and operations as Keras's `plot_model` does, to `to_file`: `.dot` text (no Graphviz
    needed), or `.svg`, `.png` (also without a suffix) or `.pdf` drawn by Graphviz's `dot` program. `model` is a
    model or the graph of a `.kd` model (`kdsl.load_model_file`)."""
    if not isinstance(model, (Model, Graph)):
        raise KdslArgumentError(f"plot_model draws a kdsl model or graph, got {type(model).__name__}")
    graph = model.graph if isinstance(model, Model) else model
    options = Options(show_shapes, show_dtype, show_layer_names, show_layer_activations, show_trainable, expand_nested)
    dot = model_to_dot(graph, options, isinstance(model, Sequential), rankdir, dpi, splines)
    write_picture(dot, to_file)
