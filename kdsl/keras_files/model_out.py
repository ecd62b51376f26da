"""A kdsl model as Keras 3 serializes one: `config.json`'s layers, graph and compile configuration.

kdsl's layers take Keras's arguments under Keras's names, so a layer's configuration carries over key by key;
functions (initializers, regularizers) become Keras's serialized classes, and a nested model its own serialized
model. A functional model lists its layers in the order of Keras's `layers` (`Graph.operations`), which is the order
its weights file follows.
"""

from __future__ import annotations

from typing import Any

from kdsl.catalogue.args import FnSpec
from kdsl.catalogue.cells import StepCell
from kdsl.catalogue.functions import REGULARIZERS
from kdsl.catalogue.stacked import StackedRNN
from kdsl.errors import KdslUnsupportedError
from kdsl.ir.graph import Graph, Layer, LayerSpec, Nested, NestedCall, Node, Value
from kdsl.ir.types import TensorType
from kdsl.keras_files.layout import CELL_CLASSES
from kdsl.keras_files.training import compile_config
from kdsl.keras_files.values import keras_function

RNN_ONLY = ("return_sequences", "return_state", "go_backwards")  # a cell's layer has them, a Keras cell has not


def model_config(graph: Graph, sequential: bool) -> dict[str, Any]:
    """The serialized Keras model (`config.json`) of a typed graph, with its train block as compile config."""
    serialized = _serialized_model(graph, sequential)
    if graph.train is not None:
        serialized["compile_config"] = compile_config(graph.train, graph.output_names)
    return serialized


def _serialized_model(graph: Graph, sequential: bool) -> dict[str, Any]:
    if sequential:
        entries = [_input_layer(graph.inputs[0]), *(_serialized_op(op) for op in graph.top_layers())]
        return {"module": "keras", "class_name": "Sequential", "registered_name": None,
                "config": {"name": graph.name, "trainable": True, "layers": entries}}  # fmt: skip
    return {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
            "config": _functional(graph)}  # fmt: skip


def _serialized_op(op: Layer | Nested) -> dict[str, Any]:
    """A layer, or a model nested as a layer, as Keras serializes it."""
    if isinstance(op, Nested):
        return _serialized_model(op.graph, op.keras == "Sequential")
    return _serialized_layer(op)


def _functional(graph: Graph) -> dict[str, Any]:
    """A functional model's layers, each with its calls (`inbound_nodes`), in the order of Keras's `layers`."""
    producer: dict[int, list] = {id(value): [value.name, 0, 0] for value in graph.inputs}
    calls: dict[int, list[dict]] = {}
    for step in graph.calls():
        index = len(calls.setdefault(id(step.layer), []))
        calls[id(step.layer)].append(_inbound_node(step, producer))
        for position, value in enumerate(step.outputs):
            producer[id(value)] = [step.layer.name, index, position]
    entries = []
    for op in graph.operations():
        if isinstance(op, Value):
            entries.append({**_input_layer(op), "name": op.name, "inbound_nodes": []})
        else:
            entries.append({**_serialized_op(op), "name": op.name, "inbound_nodes": calls[id(op)]})
    return {
        "name": graph.name,
        "trainable": True,
        "layers": entries,
        "input_layers": [producer[id(value)] for value in graph.inputs],
        "output_layers": [producer[id(value)] for value in graph.outputs],
    }


def _inbound_node(step: Node | NestedCall, producer: dict[int, list]) -> dict[str, Any]:
    """One call: the tensors it reads, as Keras passes them (a list to a merge layer or a model of several inputs,
    initial states by keyword)."""
    tensors = [_keras_tensor(value, producer) for value in step.inputs]
    if isinstance(step, NestedCall) or (step.layer.kind.max_inputs is None and step.layer.kind.min_inputs > 1):
        return {"args": [tensors if len(tensors) > 1 else tensors[0]], "kwargs": {}}
    if len(tensors) > 1:
        states: list = tensors[1:]
        if isinstance(step.layer.kind, StackedRNN):  # each cell's states as one list, as Keras takes them
            grouped = []
            for count in step.layer.kind.state_counts(step.layer.config):
                grouped, states = [*grouped, states[:count]], states[count:]
            states = grouped
        return {"args": [tensors[0]], "kwargs": {"initial_state": states}}
    return {"args": [tensors[0]], "kwargs": {}}


def _keras_tensor(value: Value, producer: dict[int, list]) -> dict[str, Any]:
    config = {"shape": _shape(value.type), "dtype": _dtype(value.type), "keras_history": producer[id(value)]}
    return {"class_name": "__keras_tensor__", "config": config}


def _shape(tensor: TensorType) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in tensor.dims]


def _dtype(tensor: TensorType) -> str:
    return "float32" if tensor.dtype == "f32" else "int32"


def _input_layer(value: Value) -> dict[str, Any]:
    config = {"batch_shape": _shape(value.type), "dtype": _dtype(value.type), "sparse": False, "ragged": False,
              "name": value.name}  # fmt: skip
    return {"module": "keras.layers", "class_name": "InputLayer", "config": config, "registered_name": None}


def _serialized_layer(layer: Layer | LayerSpec) -> dict[str, Any]:
    """A kdsl layer as Keras serializes its layer (a layer inside a wrapper has no name)."""
    name = layer.name if isinstance(layer, Layer) else None
    kind, config = layer.kind, dict(layer.config)
    if kind.name == "stacked_rnn":
        cells = [_serialized(CELL_CLASSES[c.kind.name], _arguments(c.config, RNN_ONLY)) for c in config["cells"]]
        arguments = _arguments({k: v for k, v in config.items() if k != "cells"})
        arguments["cell"] = _serialized("StackedRNNCells", {"cells": cells})
        return _serialized("RNN", arguments, name)
    return _serialized(kind.keras, _arguments(config), name)


def _arguments(config: dict[str, Any], leave_out: tuple[str, ...] = ()) -> dict[str, Any]:
    arguments = {}
    for key, value in config.items():
        if key in leave_out or (key == "input_length" and value is None):
            continue
        arguments[key] = _value(value)
    return arguments


def _value(value: Any) -> Any:
    if isinstance(value, StepCell):
        raise KdslUnsupportedError(
            f"the cell `{value.name}` cannot be written into a `.keras` file: Keras would need its Python class",
            hint="save the model as `.kdz`, which keeps the cell's `.kd` definition",
        )
    if isinstance(value, LayerSpec):
        return _serialized_layer(value)
    if isinstance(value, FnSpec):
        regularizer = value.name in REGULARIZERS.schemas
        return keras_function(value, "keras.regularizers" if regularizer else "keras.initializers")
    if isinstance(value, tuple):
        return [_value(v) for v in value]
    return value


def _serialized(class_name: str, config: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    if name is not None:
        config = {"name": name, **config}
    return {"module": "keras.layers", "class_name": class_name, "config": config, "registered_name": None}
