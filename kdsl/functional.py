"""A graph from the layer calls between symbolic tensors: what a functional model is, and a cell traced from Python.

Tensors are `kdsl.layers.KerasTensor`s, each knowing the call that made it; a layer called is a `kdsl.layers.Layer`
(its kind and configuration) or a model (`keras_class`, `graph`), whose graph is nested.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kdsl.errors import KdslArgumentError, KdslUnsupportedError
from kdsl.ir.graph import Graph, Nested, Node, Value
from kdsl.ir.graph import Layer as IRLayer
from kdsl.ir.nesting import call_nested, nest
from kdsl.naming import LayerNamer, is_valid_name
from kdsl.passes.infer import infer_shapes


def graph_from_calls(name: str, inputs: list[Any], outputs: list[Any]) -> Graph:
    """Walk back from the outputs to the inputs and build a fresh IR graph with Keras-style names."""
    if not is_valid_name(name):
        raise KdslArgumentError(f"a model name must be a name like 'classifier', got {name!r}")
    calls = calls_in_order(outputs, inputs)
    namer, names = LayerNamer(), set()
    values: dict[int, Value] = {}
    for position, tensor in enumerate(inputs):
        input_name = tensor.name or ("input_layer" if position == 0 else f"input_layer_{position}")
        if input_name in names:
            raise KdslArgumentError(f"two model inputs are named {input_name!r}")
        names.add(input_name)
        values[id(tensor)] = Value(input_name, tensor.type, tensor.masked)
    layers: dict[int, IRLayer | Nested] = {}
    for layer in (call.layer for call in calls):
        if id(layer) in layers:
            continue
        if layer.name is not None and not namer.reserve(layer.name):
            raise KdslArgumentError(f"two layers are named {layer.name!r}")
        if hasattr(layer, "keras_class"):  # a model, called as a layer
            layers[id(layer)] = nest(layer.graph, layer.name, layer.keras_class, layer)
        else:  # the layer's own configuration, not a copy: `layer.trainable = False` reaches the model
            layers[id(layer)] = IRLayer(layer.name, layer.kind, layer.config)
    check_unshared(name, layers.values())
    for nested in layers.values():
        if isinstance(nested, Nested):  # their layers were named first, as Keras names a layer when it is made
            namer.avoid(layer.name for layer in nested.graph.layers())
    nodes, named = [], set()
    for call in calls:
        target = layers[id(call.layer)]
        if isinstance(target, Nested):
            inlined, nested_call = call_nested(target, [values[id(t)] for t in call.inputs])
            nodes += inlined
            outputs_of_call = nested_call.outputs
            for value in outputs_of_call:
                value.name = target.name
        else:
            if id(target) not in named:
                named.add(id(target))
                namer.wrapped(target.config)
            if target.name is None:
                target.name = namer.next(call.layer.default_name or target.kind.name)
            outputs_of_call = [Value(target.name) for _ in call.outputs]
            nodes.append(Node(target, [values[id(t)] for t in call.inputs], outputs_of_call))
        for tensor, value in zip(call.outputs, outputs_of_call):
            values[id(tensor)] = value
    for tensor in outputs:
        value = values[id(tensor)]
        if value.name in names:
            suffix = 1
            while f"{value.name}_{suffix}" in names:
                suffix += 1
            value.name = f"{value.name}_{suffix}"
        names.add(value.name)
    graph = Graph(name, [values[id(t)] for t in inputs], [values[id(t)] for t in outputs], nodes)
    graph.declared_outputs = [None] * len(outputs)
    return infer_shapes(graph)


def check_unshared(model: str, layers: Iterable[IRLayer | Nested]) -> None:
    """Refuse a layer both inside a nested model and elsewhere in the model (Keras would share its weights; kdsl
    holds a nested model's layers apart). Layers are known by their configuration, which their copies share."""
    owners: dict[int, IRLayer | Nested] = {}
    for owner in layers:
        for layer in owner.layers if isinstance(owner, Nested) else [owner]:
            if owners.setdefault(id(layer.config), owner) is not owner:
                raise KdslUnsupportedError(
                    f"a layer of nested model `{owner.name}` is also used elsewhere in model `{model}`",
                    hint="call that layer only inside the nested model, or build the model from the layers alone",
                )


def calls_in_order(outputs: list[Any], inputs: list[Any]) -> list[Any]:
    """The layer calls between inputs and outputs, in the order they were made (as Keras lists layers)."""
    calls: dict[int, Any] = {}
    known_inputs = {id(t) for t in inputs}
    pending = list(outputs)
    while pending:
        tensor = pending.pop()
        if id(tensor) in known_inputs:
            continue
        if tensor.call is None:
            raise KdslArgumentError(
                f"an output depends on an input that is not among the model's inputs ({tensor!r})",
                hint="pass every Input the outputs depend on to Model(inputs=[...])",
            )
        if id(tensor.call) not in calls:
            calls[id(tensor.call)] = tensor.call
            pending.extend(tensor.call.inputs)
    return sorted(calls.values(), key=lambda call: call.order)
