"""Shape and dtype inference: give every value its type and every layer its parameters, or say why not."""

from __future__ import annotations

from kdsl.errors import KdslError, KdslShapeError
from kdsl.ir.graph import Graph, infer_node
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
