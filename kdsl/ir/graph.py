"""The IR: a graph of layer calls over typed SSA values.

A `Graph` is one model. Its `nodes` are in definition order (a topological order); each
node calls a `Layer` — a configured instance of a catalogue entry — on input values and
defines fresh output values. A layer called by several nodes shares its weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from kdsl.catalogue.args import FnSpec
from kdsl.errors import KdslArgumentError, KdslShapeError, Span
from kdsl.ir.types import TensorType

if TYPE_CHECKING:
    from kdsl.catalogue.base import LayerKind


@dataclass(frozen=True)
class ParamSpec:
    """One weight of a layer, named and shaped as Keras names and shapes it."""

    name: str
    shape: tuple[int, ...]
    trainable: bool = True
    initializer: FnSpec | None = None
    regularizer: FnSpec | None = None
    forget_units: int | None = None  # an LSTM bias with `unit_forget_bias`: its second quarter starts at one

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(eq=False)
class Value:
    """An SSA value. `name` is the variable it was bound to; several values may share one."""

    name: str
    type: TensorType | None = None
    masked: bool = False  # carries a padding mask (from `embedding(mask_zero=true)`)

    def __repr__(self) -> str:
        return f"Value({self.name}: {self.type})"


@dataclass(frozen=True)
class LayerSpec:
    """A configured but unnamed layer: the argument of a wrapper like `bidirectional(lstm(32))`."""

    kind: LayerKind
    config: Mapping[str, Any]

    def as_layer_spec(self) -> LayerSpec:
        return self

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerSpec) and (self.kind.name, dict(self.config)) == (
            other.kind.name,
            dict(other.config),
        )

    def __hash__(self) -> int:
        return hash(self.kind.name)


@dataclass(eq=False)
class Layer:
    """A layer instance: kind, bound configuration and, once shapes are known, its parameters."""

    name: str
    kind: LayerKind
    config: dict[str, Any]
    span: Span | None = None
    params: list[ParamSpec] | None = None

    def param_count(self, trainable: bool | None = None) -> int:
        return sum(p.size for p in self.params or [] if trainable is None or p.trainable == trainable)


@dataclass(eq=False)
class Nested:
    """A model called as one layer of another (Keras's nested model). Its nodes are inlined into the outer graph,
    each tagged with the `NestedCall` it belongs to; `layers` are the inner graph's layers in its own order, each
    copied under the name `name/layer` (so that weight names stay unique) with the inner layer's configuration."""

    name: str
    graph: Graph
    layers: list[Layer]
    keras: str = "Functional"  # the class Keras shows in a summary
    model: Any = field(default=None, repr=False)  # the `kdsl.Model` called, where it was one

    def param_count(self, trainable: bool | None = None) -> int:
        return sum(layer.param_count(trainable) for layer in self.layers)


@dataclass(eq=False)
class NestedCall:
    """One call of a nested model: to the outer graph's order, one operation, as a layer call is."""

    layer: Nested
    inputs: list[Value]
    outputs: list[Value]
    span: Span | None = None  # where `.kd` text calls the model


@dataclass(eq=False)
class Node:
    layer: Layer
    inputs: list[Value]
    outputs: list[Value]
    span: Span | None = None
    call: NestedCall | None = None  # the nested model call this node is part of


@dataclass(frozen=True)
class LossTerm:
    loss: FnSpec
    weight: float = 1.0


@dataclass
class TrainSpec:
    """A `train` block: the recipe `kdsl train` follows. Key `None` means every output."""

    losses: dict[str | None, LossTerm]
    optimizer: FnSpec
    metrics: dict[str | None, list[FnSpec]] = field(default_factory=dict)
    batch_size: int = 32
    epochs: int = 1
    validation_split: float = 0.0
    shuffle: bool = True
    data: str | None = None  # a dataset's name, or an .npz's path relative to the .kd file
    span: Span | None = field(default=None, compare=False)


@dataclass(eq=False)
class Graph:
    name: str
    inputs: list[Value]
    outputs: list[Value]
    nodes: list[Node]
    declared_outputs: list[TensorType | None] = field(default_factory=list)  # `-> probs: f32[batch, 10]`
    train: TrainSpec | None = None
    span: Span | None = None
    output_spans: list[Span | None] = field(default_factory=list)

    @property
    def output_names(self) -> list[str]:
        return [value.name for value in self.outputs]

    def calls(self) -> list[Node | NestedCall]:
        """The nodes in order, with the nodes of each nested model call as that one call."""
        calls: dict[int, Node | NestedCall] = {}
        for node in self.nodes:
            step = node.call or node
            calls.setdefault(id(step), step)
        return list(calls.values())

    def operations(self) -> list[Layer | Nested | Value]:
        """The layers (a nested model is one) the outputs depend on, and the model inputs (Keras's InputLayers), in
        the order Keras lists a functional model's layers (`model.layers`, and so its weights): by decreasing depth,
        the most layer calls between an operation and an output, and at one depth in the order a walk back from the
        outputs first reaches them (keras/src/ops/function.py, `map_graph`)."""
        producer = {id(value): step for step in self.calls() for value in step.outputs}
        first_reached: dict[int, int] = {}
        walked: list[Node | NestedCall | Value] = []  # every call (or input) the outputs depend on, after its inputs
        done: set[int] = set()

        def walk(value: Value) -> None:
            call = producer.get(id(value))
            step = call if call is not None else value
            if id(step) in done:
                return
            first_reached.setdefault(id(call.layer if call is not None else value), len(first_reached))
            for x in call.inputs if call is not None else ():
                walk(x)
            done.add(id(step))
            walked.append(step)

        for value in self.outputs:
            walk(value)
        depth_of: dict[int, int] = {}  # by call or input
        operation_depth: dict[int, int] = {}
        operations: dict[int, Layer | Nested | Value] = {}
        for step in reversed(walked):
            operation = step if isinstance(step, Value) else step.layer
            depth = max(depth_of.get(id(step), 0), operation_depth.get(id(operation), 0))
            depth_of[id(step)] = operation_depth[id(operation)] = depth
            operations[id(operation)] = operation
            for x in () if isinstance(step, Value) else step.inputs:
                parent = producer.get(id(x), x)
                depth_of[id(parent)] = max(depth + 1, depth_of.get(id(parent), 0))
        for value in self.inputs:  # an input no output depends on: at depth 0, first among them, as in Keras
            if id(value) not in operations:
                operations[id(value)], operation_depth[id(value)], first_reached[id(value)] = value, 0, -1
        return sorted(operations.values(), key=lambda op: (-operation_depth[id(op)], first_reached[id(op)]))

    def top_layers(self) -> list[Layer | Nested]:
        """Each layer or nested model once, in Keras's order (see `operations`); those no output depends on come
        last, in the order of their first call."""
        ordered = [op for op in self.operations() if not isinstance(op, Value)]
        seen = {id(layer) for layer in ordered}
        unused = {id(call.layer): call.layer for call in self.calls() if id(call.layer) not in seen}
        return ordered + list(unused.values())

    def layers(self) -> list[Layer]:
        """Each layer once, in Keras's weight order: a nested model's layers at its place, in its own order."""
        return [layer for op in self.top_layers() for layer in (op.layers if isinstance(op, Nested) else [op])]

    def param_count(self, trainable: bool | None = None) -> int:
        return sum(layer.param_count(trainable) for layer in self.layers())

    def structure(self) -> tuple:
        """Everything that gives the model its meaning, with intermediate value names left out."""
        index: dict[int, int] = {}
        for value in self.inputs:
            index[id(value)] = len(index)
        nodes = []
        layer_names = {id(layer): layer.name for layer in self.layers()}
        for node in self.nodes:
            inputs = tuple(index[id(v)] for v in node.inputs)
            for value in node.outputs:
                index[id(value)] = len(index)
            nested = node.call.layer.name if node.call is not None else None
            nodes.append((layer_names[id(node.layer)], inputs, len(node.outputs), nested))
        layers = tuple((layer.name, layer.kind.name, tuple(sorted(layer.config.items()))) for layer in self.layers())
        return (
            self.name,
            tuple((v.name, v.type) for v in self.inputs),
            tuple((v.name, index[id(v)]) for v in self.outputs),
            tuple(self.declared_outputs),
            tuple(nodes),
            layers,
            self.train,
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Graph) and self.structure() == other.structure()

    __hash__ = None  # type: ignore[assignment]


def infer_node(node: Node) -> None:
    """Type one node's outputs from its inputs' types; give its layer parameters on the first call."""
    layer, kind = node.layer, node.layer.kind
    count = len(node.inputs)
    if count < kind.min_inputs or (kind.max_inputs is not None and count > kind.max_inputs):
        raise KdslArgumentError(f"`{kind.name}` cannot take {count} input tensor(s)")
    types = [value.type for value in node.inputs]
    outputs = kind.output_types(layer.config, types)
    params = kind.params(layer.config, types)
    inner = layer.config.get("layer")  # a wrapper's layer: frozen on its own too, as Keras tracks its variables
    if not layer.config["trainable"] or (inner is not None and not inner.config["trainable"]):
        params = [replace(p, trainable=False) for p in params]
    if layer.params is not None and [(p.name, p.shape) for p in layer.params] != [(p.name, p.shape) for p in params]:
        first = ", ".join(f"{p.name}{list(p.shape)}" for p in layer.params)
        now = ", ".join(f"{p.name}{list(p.shape)}" for p in params)
        raise KdslShapeError(
            f"shared layer `{layer.name}` is called on an input of shape {types[0].keras_shape()} "
            f"that needs weights {now}, but its first call made {first}",
            hint="call a shared layer only on inputs of the same feature size",
        )
    layer.params = params  # again on a later call: `trainable` may have changed since
    masks = kind.output_masks(layer.config, [value.masked for value in node.inputs])
    for value, type_, masked in zip(node.outputs, outputs, masks, strict=True):
        value.type, value.masked = type_, masked
