"""Where Keras 3 keeps a layer's weights in `model.weights.h5` (and in a `.weights.h5` file).

Keras walks the model's `layers` and names each by its class in snake case, numbered per class in that order
(`layers/dense`, `layers/dense_1`, not by the layer's own name). A layer's variables are the datasets `0`, `1`, ...
of its `vars` group; a recurrent layer keeps them in its cell's (`layers/lstm/cell/vars`), a Bidirectional in its
two copies' (`forward_layer/cell`, `backward_layer/cell`), a TimeDistributed in its layer's (`layer/vars`) and an
RNN over several cells in each cell's (`cell/cells/lstm_cell/vars`). kdsl's weights have the same order, so a
layer's weights are these groups' variables one after another.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kdsl.catalogue.base import LayerKind
from kdsl.keras_files.values import snake_case

CELL_CLASSES = {"simple_rnn": "SimpleRNNCell", "lstm": "LSTMCell", "gru": "GRUCell"}


def unique_names(class_names: Iterable[str]) -> list[str]:
    """Keras's container names: each class in snake case, the second of a class `_1`, and so on."""
    used: dict[str, int] = {}
    names = []
    for class_name in class_names:
        base = snake_case(class_name)
        if base in used:
            used[base] += 1
            names.append(f"{base}_{used[base]}")
        else:
            used[base] = 0
            names.append(base)
    return names


def layer_paths(class_names: Iterable[str]) -> list[str]:
    """The groups of a model's layers, given their Keras classes in the model's `layers` order."""
    return [f"layers/{name}" for name in unique_names(class_names)]


def weight_groups(kind: LayerKind, config: Mapping[str, Any], param_names: list[str]) -> list[tuple[str, list[int]]]:
    """A layer's weights grouped as Keras keeps them: (the group under the layer's path, the weights' indices)."""
    groups: list[tuple[str, list[int]]] = []
    for index, name in enumerate(param_names):
        group = _group(kind, config, name)
        if groups and groups[-1][0] == group:
            groups[-1][1].append(index)
        else:
            groups.append((group, [index]))
    return groups


def _group(kind: LayerKind, config: Mapping[str, Any], param: str) -> str:
    if kind.name in CELL_CLASSES:
        return "cell"
    if kind.name == "stacked_rnn":
        index = int(param.split("/", 1)[0].removeprefix("cell_"))
        cells = unique_names(CELL_CLASSES[cell.kind.name] for cell in config["cells"])
        return f"cell/cells/{cells[index]}"
    if kind.name == "bidirectional":
        direction, _, rest = param.partition("_")
        inner = config["layer"]
        return _join(f"{direction}_layer", _group(inner.kind, inner.config, rest.split("/", 1)[1]))
    if kind.name == "time_distributed":
        inner = config["layer"]
        return _join("layer", _group(inner.kind, inner.config, param))
    return ""


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


def vars_path(layer_path: str, group: str) -> str:
    return _join(layer_path, group, "vars")
