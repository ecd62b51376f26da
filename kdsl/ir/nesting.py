"""Calling one model inside another: the inner graph's nodes inlined into the outer graph, tagged with the call.

Inlined, a nested model needs nothing new from shape inference, lowering or the kernels; the tags let the
outer graph list it as one operation (`Graph.operations`), as Keras does.
"""

from __future__ import annotations

from typing import Any

from kdsl.errors import KdslArgumentError, KdslShapeError, Span
from kdsl.ir.graph import Graph, Layer, Nested, NestedCall, Node, Value


def nest(graph: Graph, name: str, keras: str = "Functional", model: Any = None) -> Nested:
    """`graph` as a model nested in another under `name`: its layers copied as `name/layer`, each sharing the inner
    layer's configuration (so that freezing the inner model's layers freezes them here too)."""
    copies = [
        Layer(f"{name}/{layer.name}", layer.kind, layer.config, layer.span, layer.params) for layer in graph.layers()
    ]
    return Nested(name, graph, copies, keras, model)


def check_count(nested: Nested, count: int) -> None:
    """Refuse a call with another number of inputs than the inner model takes, before its nodes are inlined."""
    expected = nested.graph.inputs
    if count != len(expected):
        raise KdslArgumentError(
            f"model `{nested.name}` takes {len(expected)} input(s), got {count}",
            hint=f"its inputs: {', '.join(f'{v.name}: {v.type}' for v in expected)}",
        )


def check_inputs(nested: Nested, types: list) -> None:
    """Refuse inputs that do not fit the inner model's, as Keras's input check does: same count, dtype and rank,
    and the same size wherever the inner model fixes one."""
    check_count(nested, len(types))
    for value, given in zip(nested.graph.inputs, types):
        fits = given.dtype == value.type.dtype and len(given.dims) == len(value.type.dims)
        fits = fits and all(not isinstance(d, int) or d == g for d, g in zip(value.type.dims, given.dims))
        if not fits:
            raise KdslShapeError(
                f"model `{nested.name}` expects input `{value.name}` of shape {value.type.keras_shape()} "
                f"{value.type.dtype}, got {given.keras_shape()} {given.dtype}"
            )


def call_nested(nested: Nested, inputs: list[Value], span: Span | None = None) -> tuple[list[Node], NestedCall]:
    """The inner graph's nodes on `inputs`, with fresh values, its layers' copies and one call's tag; the call's
    outputs are the values the inner outputs become."""
    graph = nested.graph
    if any(value in graph.inputs for value in graph.outputs):
        raise KdslArgumentError(f"model `{nested.name}` gives one of its inputs back as an output; it cannot be nested")
    copy = {id(layer): outer for layer, outer in zip(graph.layers(), nested.layers)}
    values: dict[int, Value] = {id(inner): outer for inner, outer in zip(graph.inputs, inputs)}
    call = NestedCall(nested, list(inputs), [], span)
    nodes = []
    for node in graph.nodes:
        outputs = [Value(value.name, value.type, value.masked) for value in node.outputs]
        values.update((id(inner), outer) for inner, outer in zip(node.outputs, outputs))
        nodes.append(Node(copy[id(node.layer)], [values[id(v)] for v in node.inputs], outputs, node.span, call))
    call.outputs = [values[id(value)] for value in graph.outputs]
    return nodes, call
