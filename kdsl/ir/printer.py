"""The IR as text a person can read (`kdsl compile --emit ir`)."""

from __future__ import annotations

from kdsl.catalogue.args import format_value
from kdsl.catalogue.operations import Operation
from kdsl.ir.graph import Graph, Layer, Value
from kdsl.lang.format import format_setting, non_default_settings


def print_graph(graph: Graph) -> str:
    names: dict[int, str] = {}
    seen: dict[str, int] = {}

    def define(value: Value) -> str:
        count = seen.get(value.name, 0)
        seen[value.name] = count + 1
        names[id(value)] = f"%{value.name}" + (f".{count}" if count else "")
        return names[id(value)]

    def typed(value: Value) -> str:
        return f"{names[id(value)]}: {value.type}" + (" masked" if value.masked else "")

    for value in graph.inputs:
        define(value)
    inputs = ", ".join(typed(v) for v in graph.inputs)
    lines = [f"model {graph.name}({inputs}) {{"]
    layers = graph.layers()
    if layers:
        lines.append("  layers:")
        width = max(len(layer.name) for layer in layers)
        for layer in layers:
            lines.append(f"    {layer.name:<{width}} = {_layer_text(layer)}")
            for param in layer.params or []:
                frozen = "" if param.trainable else "  (non-trainable)"
                shape = ", ".join(map(str, param.shape))
                lines.append(f"    {'':<{width}}   {param.name}: f32[{shape}]{frozen}")
    lines.append("  graph:")
    for node in graph.nodes:
        for value in node.outputs:
            define(value)
        outputs = ", ".join(typed(v) for v in node.outputs)
        args = [names[id(v)] for v in node.inputs]
        if isinstance(node.layer.kind, Operation):  # its numbers in their places: `subtract(1.0, %f)`
            operands = node.layer.kind.operands(node.layer.config, args)
            args = [x if isinstance(x, str) else format_value(x) for x in operands]
        args = ", ".join(args)
        where = f"  # {node.span.file}:{node.span.line}" if node.span else ""
        lines.append(f"    {outputs} = {node.layer.name}({args}){where}")
    lines.append("  return " + ", ".join(names[id(v)] for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines)


def _layer_text(layer: Layer) -> str:
    config = {k: v for k, v in layer.config.items() if k != "constants" or not isinstance(layer.kind, Operation)}
    settings = ", ".join(f"{k}={format_setting(v)}" for k, v in non_default_settings(layer.kind, config).items())
    total, trainable = layer.param_count(), layer.param_count(trainable=True)
    count = f"  # {total:,} params" + (f" ({total - trainable:,} non-trainable)" if total != trainable else "")
    return f"{layer.kind.keras}({settings}){count if total else ''}"
