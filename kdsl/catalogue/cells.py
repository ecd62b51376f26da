"""Keras's `RNN` over a cell of the user's own: one step written as a small graph, run over every timestep.

A `StepCell` is one step as a graph of layer calls: its inputs are the step's input x (batch, features) and the
states, its outputs the step's output and the new states. The `rnn` layer kind types the step for the sequence it
runs over and takes the weights of the layers the step calls, each created once and reused at every step. Nothing
here depends on how the step graph was made (a `cell` of a `.kd` file, or a cell traced from Python).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from kdsl.catalogue.args import Arg, ArgError, format_value, int_list, positive_int
from kdsl.catalogue.base import CONSTRAINT_HINT, Config, LayerKind, expect_float, expect_rank, fixed
from kdsl.catalogue.functions import INITIALIZERS, REGULARIZERS
from kdsl.catalogue.recurrent import RNN_ARGS, RNN_UNSUPPORTED, Recurrent
from kdsl.errors import KdslError, KdslShapeError, Span
from kdsl.ir.graph import Graph, Layer, ParamSpec, infer_node
from kdsl.ir.types import TensorType

_RECURRENT = "a step runs once per timestep already; compute with `dense` and arithmetic on the states"
STEP_REFUSED = {  # layers that make no sense inside one step, and why
    "simple_rnn": _RECURRENT,
    "lstm": _RECURRENT,
    "gru": _RECURRENT,
    "rnn": _RECURRENT,
    "stacked_rnn": _RECURRENT,
    "bidirectional": _RECURRENT,
    "time_distributed": "a step sees one timestep, which has no time axis",
    "dropout": "dropout inside a step would draw new noise at every timestep; apply it to the sequence instead",
    "batch_normalization": "its moving statistics would change at every timestep; normalize the sequence instead",
    "embedding": "embed the sequence before the `rnn`: `rnn(embedding(ids, ...), Cell(...))`",
}


@dataclass(frozen=True)
class CellSource:
    """How a cell was written in a `.kd` file: its definition's text and the arguments it was made with."""

    definition: str
    arguments: tuple[tuple[str, Any], ...]  # (parameter, value), in the definition's order


@dataclass(eq=False)
class StepCell:
    """One step of a recurrent cell. `graph` maps [x, *states] to [output, *new states]; `states` are the states'
    names and widths (each state is (batch, width)); `assigned` where each new state is given, for errors."""

    name: str
    graph: Graph
    states: tuple[tuple[str, int], ...]
    assigned: tuple[Span | None, ...]
    source: CellSource | None = None

    def __str__(self) -> str:
        if self.source is None:  # traced from Python: printed as a cell of no parameters
            return f"{self.name}()"
        return f"{self.name}({', '.join(f'{k}={format_value(v)}' for k, v in self.source.arguments)})"

    def key(self) -> tuple:
        """What makes two cells the same: the same definition made with the same arguments."""
        return (self.name, self.states, self.source) if self.source is not None else (id(self),)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StepCell) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.name)

    def layers(self) -> list[Layer]:
        """The layers the step calls, each once, in the order of their first call: the cell's weights' order."""
        return list({id(node.layer): node.layer for node in self.graph.nodes}.values())

    def infer(self, x: TensorType) -> TensorType:
        """Type the step for input x (batch, features) and give its layers their weights; the output's type.
        A new state must keep its state's shape."""
        batch = x.dims[0]
        step_input, *states = self.graph.inputs
        step_input.type = x
        for value, (_, width) in zip(states, self.states):
            value.type = TensorType("f32", (batch, width))
        for node in self.graph.nodes:
            try:
                infer_node(node)
            except KdslError as error:
                raise error.at(node.span) from None
        output, *new_states = self.graph.outputs
        for value, old, (name, _), span in zip(new_states, states, self.states, self.assigned):
            if value.type != old.type:
                raise KdslShapeError(
                    f"state `{name}` is {old.type.keras_shape()} but its new value is {value.type.keras_shape()}",
                    span,
                    hint="a state keeps its shape from one step to the next",
                )
        if output.type.dtype != "f32" or output.type.rank != 2:
            raise KdslShapeError(f"the output of cell `{self.name}` must be (batch, units), got {output.type}")
        return output.type


def step_cell(value: Any) -> StepCell:
    if not isinstance(value, StepCell):
        raise ArgError(
            f"expected a cell, got `{format_value(value)}`",
            hint="define one with `cell NAME(units) (x, h: f32[batch, units]) -> h { ... }`, then `rnn(x, NAME(32))`",
        )
    return value


def weight_name(layer: Layer, param: ParamSpec) -> str:
    """How a cell's weight is named inside the `rnn` layer: `dense/kernel` for a layer's, `kernel` for one the
    cell holds itself (Keras's `add_weight`)."""
    return layer.name if isinstance(layer.kind, CellWeight) else f"{layer.name}/{param.name}"


def weight_shape(value: Any) -> tuple[int, ...]:
    dims = int_list(value)
    if not dims:
        raise ArgError("expected a shape of positive sizes, got `[]`", hint="e.g. [28, 64]")
    return tuple(positive_int(d) for d in dims)


class CellWeight(LayerKind):
    """A weight a cell holds itself (Keras's `add_weight`): a node with no inputs whose value is the weight, read by
    the cell's operations (`matmul(x, kernel)`, `peephole * c`). Its value has no batch axis."""

    name, keras = "weight", "Variable"
    args = (
        Arg("shape", weight_shape, positional=True),
        Arg("initializer", INITIALIZERS, INITIALIZERS("glorot_uniform")),
        Arg("regularizer", REGULARIZERS.optional, None),
    )
    unsupported = {"constraint": CONSTRAINT_HINT}
    min_inputs, max_inputs = 0, 0
    supports_masking = False

    def output_types(self, config: Config, inputs: Sequence[TensorType]) -> list[TensorType]:
        return [TensorType("f32", config["shape"])]

    def params(self, config: Config, inputs: Sequence[TensorType]) -> list[ParamSpec]:
        return [ParamSpec("value", config["shape"], True, config["initializer"], config["regularizer"])]


class CellRNN(Recurrent):
    """Runs a `StepCell` over the sequence; weights are the cell's layers', in the order the step first calls them."""

    name, keras = "rnn", "RNN"
    args = (
        Arg("cell", step_cell, positional=True),
        *RNN_ARGS,
    )
    unsupported = RNN_UNSUPPORTED
    max_inputs = None  # the sequence, then the initial states

    def state_units(self, config: Config) -> list[tuple[str, int]]:
        return list(config["cell"].states)

    def output_types(self, config: Config, inputs: Sequence[TensorType]) -> list[TensorType]:
        self._step(config, inputs[0])
        return super().output_types(config, inputs)

    def output_units(self, config: Config) -> int:
        return config["cell"].graph.outputs[0].type.dims[1]  # typed by `output_types`

    def params(self, config: Config, inputs: Sequence[TensorType]) -> list[ParamSpec]:
        cell = self._step(config, inputs[0])
        return [replace(p, name=weight_name(layer, p)) for layer in cell.layers() for p in layer.params or []]

    def _step(self, config: Config, x: TensorType) -> StepCell:
        expect_float(self, x)
        expect_rank(self, x, 3, "(batch, timesteps, features)")
        fixed(self, x.dims[2], "number of input features")
        cell = config["cell"]
        cell.infer(TensorType("f32", (x.dims[0], x.dims[2])))
        return cell
