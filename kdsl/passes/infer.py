"""Shape and dtype inference: give every value its type and every layer its parameters, or say why not."""

from __future__ import annotations

from dataclasses import replace

from kdsl.errors import KdslArgumentError, KdslError, KdslShapeError
from kdsl.ir.graph import Graph, Node
from kdsl.ir.nesting import check_inputs


def infer_shapes(graph: Graph) -> Graph:
    """Type each node's outputs in order; check nested models' inputs, shared layers and declared output types."""
    checked: set[int] = set()
    for node in graph.nodes:
        if node.call is not None and id(node.call) not in checked:  # a nested model's call, at its first node
            checked.add(id(node.call))
            try:
                check_inputs(node.call.layer, [value.type for value in node.call.inputs])
            except KdslError as error:
                raise error.at(node.call.span) from None
        try:
            infer_node(node)
        except KdslError as error:
            if error.hint is None:
                error.hint = ", ".join(f"`{v.name}` is {v.type}" for v in node.inputs)
            raise error.at(node.span) from None
    for value, declared, span in zip(graph.outputs, graph.declared_outputs, graph.output_spans):
        if declared is not None and declared != value.type:
            raise KdslShapeError(
                f"output `{value.name}` is declared {declared} but the model computes {value.type}",
                span,
                hint="fix the declaration or the layers before it",
            )
    return graph


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
