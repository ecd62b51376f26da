"""Keras's `RNN` over a list of cells (`StackedRNNCells`): one layer whose cells run one after another."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kdsl.catalogue.args import Arg, ArgError
from kdsl.catalogue.base import Config, layer_arg
from kdsl.catalogue.recurrent import RNN_ARGS, RNN_UNSUPPORTED, Recurrent
from kdsl.ir.graph import LayerSpec
from kdsl.ir.types import TensorType

CELL_KINDS = ("simple_rnn", "lstm", "gru")
_cell = layer_arg(CELL_KINDS, "a recurrent cell like `lstm(32)`")
_RNN_ONLY = ("return_sequences", "return_state", "go_backwards", "stateful")


def cells(value: Any) -> tuple[LayerSpec, ...]:
    """Two or more cells; what the whole RNN decides (`return_sequences`...) is the RNN's, not a cell's."""
    if not isinstance(value, (list, tuple)) or len(value) < 2:
        raise ArgError("expected a list of two or more cells, like `[lstm(32), lstm(16)]`")
    specs = tuple(_cell(item) for item in value)
    for spec in specs:
        given = [name for name in _RNN_ONLY if spec.config[name]]
        if given:
            raise ArgError(
                f"a cell takes no `{given[0]}`", hint=f"give it to the RNN: `stacked_rnn(x, [...], {given[0]}=true)`"
            )
    return specs


def cell_prefix(index: int) -> str:
    """Where cell `index`'s weights are named, as in `cell_1/kernel`."""
    return f"cell_{index}/"


class StackedRNN(Recurrent):
    """At each step cell k reads cell k-1's output; the layer outputs the last cell's. Weights and states come
    cell by cell, each cell's in its own layer's order; `initial_state` and `return_state` list every cell's."""

    name, keras = "stacked_rnn", "RNN"
    args = (
        Arg("cells", cells, positional=True),
        *RNN_ARGS,
    )
    unsupported = RNN_UNSUPPORTED
    max_inputs = None  # the sequence, then every cell's initial states

    def state_units(self, config: Config) -> list[tuple[str, int]]:
        return [
            (f"{name}{index + 1}", units)
            for index, cell in enumerate(config["cells"])
            for name, units in cell.kind.state_units(cell.config)
        ]

    def state_counts(self, config: Config) -> list[int]:
        """How many states each cell carries: Keras returns them grouped by cell."""
        return [len(cell.kind.states) for cell in config["cells"]]

    def output_units(self, config: Config) -> int:
        last = config["cells"][-1]
        return last.kind.output_units(last.config)

    def params(self, config, inputs):
        params, features = [], inputs[0]
        for index, cell in enumerate(config["cells"]):
            for p in cell.kind.params(cell.config, [features]):
                trainable = p.trainable and cell.config["trainable"]
                params.append(replace(p, name=cell_prefix(index) + p.name, trainable=trainable))
            units = cell.kind.output_units(cell.config)
            features = TensorType("f32", (*features.dims[:2], units))
        return params
