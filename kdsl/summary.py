"""The Keras model summary: one row per layer with its output shape and parameter count."""

from __future__ import annotations

from kdsl.ir.graph import Graph, Nested, NestedCall, Node
from kdsl.memory import format_bytes

BOX = dict(top="┏━┳┓", head="┃┃┃", rule="┡━╇┩", row="│││", between="├─┼┤", bottom="└─┴┘")  # left, fill, joint, right
ASCII = dict(top="+-++", head="|||", rule="+=++", row="|||", between="+-++", bottom="+-++")


def summary(graph: Graph, ascii_only: bool = False) -> str:
    """The table Keras prints for the same model, with totals in parameters and bytes."""
    chain = _is_chain(graph)
    headers = ["Layer (type)", "Output Shape", "Param #"] + ([] if chain else ["Connected to"])
    rows = [] if chain else [[f"{v.name} (InputLayer)", v.type.keras_shape(), "0", "-"] for v in graph.inputs]
    producers = _producers(graph)
    for layer in graph.top_layers():  # a nested model is one row, as in Keras
        calls = [call for call in graph.calls() if call.layer is layer]
        keras = layer.keras if isinstance(layer, Nested) else layer.kind.keras
        row = [f"{layer.name} ({keras})", _output_shape(calls), f"{layer.param_count():,}"]
        if not chain:
            row.append(", ".join(producers[id(v)] for node in calls for v in node.inputs))
        rows.append(row)
    total, trainable = graph.param_count(), graph.param_count(trainable=True)
    footer = [
        f" Total params: {total:,} ({format_bytes(4 * total)})",
        f" Trainable params: {trainable:,} ({format_bytes(4 * trainable)})",
        f" Non-trainable params: {total - trainable:,} ({format_bytes(4 * (total - trainable))})",
    ]
    return "\n".join([f'Model: "{graph.name}"', _table(headers, rows, ASCII if ascii_only else BOX), *footer])


def _is_chain(graph: Graph) -> bool:
    """A Sequential-like model: one input, each layer called once on the previous layer's only output."""
    previous = graph.inputs
    calls = graph.calls()
    if len(previous) != 1 or len(graph.top_layers()) != len(calls):
        return False
    for node in calls:
        if node.inputs != previous or len(node.outputs) != 1:
            return False
        previous = node.outputs
    return graph.outputs == previous


def _output_shape(calls: list[Node | NestedCall]) -> str:
    shapes = [[v.type.keras_shape() for v in node.outputs] for node in calls]
    if any(s != shapes[0] for s in shapes):
        return "multiple"
    return shapes[0][0] if len(shapes[0]) == 1 else "[" + ", ".join(shapes[0]) + "]"


def _producers(graph: Graph) -> dict[int, str]:
    """Each value as Keras names it in "Connected to": `layer[call][output]`."""
    names = {id(v): f"{v.name}[0][0]" for v in graph.inputs}
    calls: dict[int, int] = {}
    for node in graph.calls():
        call = calls.get(id(node.layer), 0)
        calls[id(node.layer)] = call + 1
        for index, value in enumerate(node.outputs):
            names[id(value)] = f"{node.layer.name}[{call}][{index}]"
    return names


def _table(headers: list[str], rows: list[list[str]], style: dict[str, str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    numeric = {headers.index("Param #")}

    def line(kind: str) -> str:
        left, fill, joint, right = style[kind]
        return left + joint.join(fill * (w + 2) for w in widths) + right

    def cells(values: list[str], kind: str) -> str:
        left, joint, right = style[kind]
        padded = [v.rjust(w) if i in numeric else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))]
        return left + joint.join(f" {p} " for p in padded) + right

    out = [line("top"), cells(headers, "head"), line("rule")]
    for i, row in enumerate(rows):
        if i:
            out.append(line("between"))
        out.append(cells(row, "row"))
    out.append(line("bottom"))
    return "\n".join(out)
