"""Lowering: a graph of layer calls becomes one program of primitive ops.

Program inputs are, in order, the model inputs, every parameter (in Keras's `get_weights`
order), the states that stateful recurrent layers carry from one batch to the next, and,
when training, the dropout keep-masks the host draws for each step.
Outputs are the model outputs, then the updates: (training) the new moving statistics of each
BatchNormalization and the final carried states, then the mask of each output that has one. Masks from
`embedding(mask_zero=true)` travel beside the values they belong to, as float 0/1 tensors
of shape (batch, timesteps); losses and metrics weigh each timestep by them, as Keras does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdsl.catalogue.recurrent import Recurrent
from kdsl.catalogue.wrappers import Bidirectional
from kdsl.errors import KdslUnsupportedError
from kdsl.ir.builder import Builder
from kdsl.ir.graph import Graph, Layer, Node, ParamSpec
from kdsl.ir.program import Program, Var
from kdsl.ir.types import TensorType
from kdsl.passes import lower_cells, lower_layers, lower_recurrent  # noqa: F401  (they register their rules)
from kdsl.passes.layer_rules import RULES, LayerContext


@dataclass(frozen=True)
class Noise:
    """A dropout keep-mask input: Bernoulli(1 - rate) / (1 - rate), drawn by the host each step."""

    var: Var
    rate: float
    seed: int | None
    layer: str


@dataclass(frozen=True)
class Carried:
    """A state a stateful recurrent layer carries from one batch to the next: zeros at first, then each step's
    final state. Not a weight (Keras keeps it outside the layer's weights): a program input after the weights."""

    layer: Layer
    name: str  # "lstm/states/h"
    type: TensorType


def carried_states(graph: Graph) -> list[Carried]:
    """Every stateful recurrent layer's states, in the order of the graph's nodes."""
    found: list[Carried] = []
    called: set[int] = set()
    for node in graph.nodes:
        kind = node.layer.kind
        if not isinstance(kind, Recurrent | Bidirectional):
            continue
        states = kind.carried(node.layer.config, [v.type for v in node.inputs])
        if states and id(node.layer) in called:
            raise KdslUnsupportedError(
                f"stateful layer `{node.layer.name}` is called more than once",
                hint="a stateful layer keeps one state per batch row: call it once, or make one layer per call",
            )
        called.add(id(node.layer))
        found += [Carried(node.layer, f"{node.layer.name}/states/{name}", type) for name, type in states]
    return found


@dataclass
class Lowered:
    program: Program
    inputs: list[Var]
    params: list[tuple[str, ParamSpec, Var]]  # (full name "layer/param", spec, variable)
    noise: list[Noise]
    outputs: list[Var]
    updates: list[tuple[int, Var]] = field(default_factory=list)  # (index, new value) of a param or carried state
    masks: list[Var | None] = field(default_factory=list)  # each output's padding mask, or None
    carried: list[tuple[Carried, Var]] = field(default_factory=list)  # indexed after the params by `updates`

    def rewritten(self, program: Program) -> Lowered:
        """The same lowering with its program rewritten by a pass, which may rename the program's results."""
        results = iter(program.outputs)
        outputs = [next(results) for _ in self.outputs]
        updates = [(index, next(results)) for index, _ in self.updates]
        masks = [None if mask is None else next(results) for mask in self.masks]
        assert next(results, None) is None
        return Lowered(program, self.inputs, self.params, self.noise, outputs, updates, masks, self.carried)


class _Lowering:
    def __init__(self, graph: Graph, training: bool):
        self.graph, self.training = graph, training
        self.b = Builder()
        self.noise: list[Noise] = []
        self.updates: list[tuple[Var, Var]] = []

    def add_noise(self, type: TensorType, rate: float, seed: int | None, layer: str) -> Var:
        var = self.b.var(type, "keep")
        self.noise.append(Noise(var, rate, seed, layer))
        return var

    def run(self) -> Lowered:
        b = self.b
        inputs = [b.var(v.type, v.name, exact=True) for v in self.graph.inputs]
        env: dict[int, Var] = {id(v): var for v, var in zip(self.graph.inputs, inputs)}
        masks: dict[int, Var | None] = {}
        params: list[tuple[str, ParamSpec, Var]] = []
        layer_params: dict[int, dict[str, Var]] = {}
        for layer in self.graph.layers():
            named = {}
            for spec in layer.params or []:
                var = b.var(TensorType("f32", spec.shape), f"{layer.name}/{spec.name}", exact=True)
                params.append((f"{layer.name}/{spec.name}", spec, var))
                named[spec.name] = var
            layer_params[id(layer)] = named
        carried = [(state, b.var(state.type, state.name, exact=True)) for state in carried_states(self.graph)]
        for node in self.graph.nodes:
            own = [var for state, var in carried if state.layer is node.layer]
            self.lower_node(node, env, masks, layer_params[id(node.layer)], own)
        outputs = [env[id(v)] for v in self.graph.outputs]
        output_masks = [masks.get(id(v)) for v in self.graph.outputs]
        index = {id(var): i for i, var in enumerate([*(var for _, _, var in params), *(var for _, var in carried)])}
        updates = [(index[id(p)], value) for p, value in self.updates]
        program = b.program(
            [*inputs, *(var for _, _, var in params), *(var for _, var in carried), *(n.var for n in self.noise)],
            [*outputs, *(value for _, value in updates), *(m for m in output_masks if m is not None)],
        )
        return Lowered(program, inputs, params, self.noise, outputs, updates, output_masks, carried)

    def lower_node(self, node: Node, env, masks, params: dict[str, Var], carried: list[Var]) -> None:
        layer = node.layer
        self.b.origin = layer.name
        ctx = LayerContext(self.b, layer, params, self.training, self, carried=list(carried))
        inputs = [env[id(v)] for v in node.inputs]
        in_masks = [masks.get(id(v)) for v in node.inputs]
        outputs = RULES[layer.kind.name](ctx, layer.config, inputs, in_masks, [v.type for v in node.outputs])
        mask_flags = layer.kind.output_masks(layer.config, [m is not None for m in in_masks])
        first_mask = next((m for m in in_masks if m is not None), None)
        for value, var, masked in zip(node.outputs, outputs, mask_flags):
            env[id(value)] = var
            masks[id(value)] = ctx.new_mask if ctx.mask_set else (first_mask if masked else None)


def lower(graph: Graph, training: bool = False) -> Lowered:
    """The graph as one program of primitive ops, as each layer's rule writes it; `training` picks dropout and
    batch-statistics behaviour. `kdsl.pipeline` tidies it."""
    return _Lowering(graph, training).run()
