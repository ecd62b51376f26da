"""The picture Keras's `plot_model` draws of a model: a box per layer or operation, with edges between them.

As in Keras 3 (keras/src/utils/model_visualization.py): each box is a table headed by the layer's class (and name,
with `show_layer_names`), a layer called several times is one box, a functional model's inputs are `InputLayer`
boxes (a Sequential model has none), and a nested model is one box, or with `expand_nested` a dashed cluster of its
own boxes, edges going to its inputs and from the layers that make its outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdsl.ir.graph import Graph, Layer, Nested, NestedCall, Node, Value
from kdsl.pictures.dot import Dot, Html, html_text

DTYPES = {"f32": "float32", "i32": "int32"}


@dataclass(frozen=True)
class Options:
    """What each box shows, as `plot_model`'s arguments of the same names."""

    show_shapes: bool = False
    show_dtype: bool = False
    show_layer_names: bool = False
    show_layer_activations: bool = False
    show_trainable: bool = False
    expand_nested: bool = False


def model_to_dot(
    graph: Graph,
    options: Options = Options(),
    sequential: bool = False,
    rankdir: str = "TB",
    dpi: int = 200,
    splines: str = "ortho",
) -> Dot:
    """The DOT graph Keras's `model_to_dot` makes of the model `graph` (a Sequential one with `sequential`)."""
    dot = Dot(graph.name, {"rankdir": rankdir, "concentrate": True, "dpi": dpi, "splines": splines})
    dot.node_defaults = {"shape": "record"}
    _draw(dot, graph, options, sequential, {})
    return dot


def _draw(dot: Dot, graph: Graph, options: Options, sequential: bool, keys: dict[int, str]) -> None:
    """Boxes (or clusters) for `graph`'s operations in Keras's order, then an edge for each input of each call.
    `keys` names each box (by the id of its operation) in the order they are drawn, so that the text is the same
    on every run."""

    def key(operation: Layer | Nested | Value) -> str:
        return keys.setdefault(id(operation), f"box{len(keys)}")

    calls_of: dict[int, list[Node | NestedCall]] = {}
    for call in graph.calls():
        calls_of.setdefault(id(call.layer), []).append(call)
    for operation in _operations(graph, sequential):
        if options.expand_nested and isinstance(operation, Nested):
            cluster = dot.cluster(key(operation), style="dashed", label=operation.name, labeljust="l")
            _draw(cluster, operation.graph, options, operation.keras == "Sequential", keys)
        else:
            label = _label(operation, calls_of.get(id(operation), []), options)
            dot.node(key(operation), label=label, fontname="Helvetica", border="0", margin="0")
    producers = _producers(graph)
    for call in graph.calls():
        for position, value in enumerate(call.inputs):
            producer = producers.get(id(value))
            if producer is None and sequential:  # a Sequential model draws no input box
                continue
            source = value if producer is None else _source(*producer, options.expand_nested)
            target = _target(call, position, options.expand_nested)
            dot.edge(key(source), key(target), penwidth="2")


def _operations(graph: Graph, sequential: bool) -> list[Layer | Nested | Value]:
    """The boxes of `graph`: its operations in Keras's order, then the layers no output depends on."""
    operations = [op for op in graph.operations() if not (sequential and isinstance(op, Value))]
    drawn = {id(op) for op in operations}
    return operations + [layer for layer in graph.top_layers() if id(layer) not in drawn]


def _source(call: Node | NestedCall, output: int, expand: bool) -> Layer | Nested:
    """The box an edge from `call`'s `output` leaves: within an expanded nested model, the layer making it."""
    if not (expand and isinstance(call, NestedCall)):
        return call.layer
    inner = call.layer.graph
    return _source(*_producers(inner)[id(inner.outputs[output])], expand)


def _producers(graph: Graph) -> dict[int, tuple[Node | NestedCall, int]]:
    """Each value a call of `graph` makes (by id): the call, and which of its outputs the value is."""
    return {id(value): (call, i) for call in graph.calls() for i, value in enumerate(call.outputs)}


def _target(call: Node | NestedCall, position: int, expand: bool) -> Layer | Nested | Value:
    """The box an edge into input `position` of `call` reaches: within an expanded nested model, its input box (a
    functional model) or its first layer (a Sequential one)."""
    if not (expand and isinstance(call, NestedCall)):
        return call.layer
    nested = call.layer
    inner = nested.graph
    if nested.keras != "Sequential":
        return inner.inputs[position]
    return _target(inner.calls()[0], 0, expand)


def _label(operation: Layer | Nested | Value, calls: list[Node | NestedCall], options: Options) -> Html:
    """Keras's table: the class (and name), the activation, then a row of shapes, dtype and trainability."""
    if isinstance(operation, Value):
        keras, inputs, outputs = "InputLayer", [], [operation]
    else:
        keras = operation.keras if isinstance(operation, Nested) else operation.kind.keras
        inputs, outputs = (calls[0].inputs, calls[0].outputs) if calls else ([], [])
    columns = []
    if options.show_shapes:
        if keras != "InputLayer":
            columns.append(_cell(f"Input shape: <b>{html_text(_shapes(inputs))}</b>"))
        columns.append(_cell(f"Output shape: <b>{html_text(_shapes(outputs))}</b>"))
    if options.show_dtype:
        dtypes = [DTYPES.get(v.type.dtype, v.type.dtype) for v in outputs if v.type is not None]
        columns.append(_cell(f"Output dtype: <b>{html_text(_one_or_list(dtypes))}</b>"))
    if options.show_trainable and not isinstance(operation, Value) and operation.param_count():
        trainable = operation.param_count(trainable=True) > 0
        colour, word = ("forestgreen", "Trainable") if trainable else ("firebrick", "Non-trainable")
        columns.append(f'<td bgcolor="{colour}"><font point-size="14" color="white"><b>{word}</b></font></td>')
    span = max(1, len(columns))
    title = f"<b>{html_text(operation.name)}</b> ({keras})" if options.show_layer_names else f"<b>{keras}</b>"
    rows = [f'<tr><td colspan="{span}" bgcolor="black"><font point-size="16" color="white">{title}</font></td></tr>']
    activation = _activation(operation)
    if options.show_layer_activations and activation is not None:
        text = f"Activation: <b>{html_text(activation)}</b>"
        rows.append(f'<tr><td bgcolor="white" colspan="{span}"><font point-size="14">{text}</font></td></tr>')
    if columns:
        rows.append("<tr>" + "".join(columns) + "</tr>")
    return Html('<table border="0" cellborder="1" bgcolor="black" cellpadding="10">' + "".join(rows) + "</table>")


def _cell(text: str) -> str:
    return f'<td bgcolor="white"><font point-size="14">{text}</font></td>'


def _shapes(values: list[Value]) -> str:
    """Shapes as Keras writes a tensor's or a list of tensors' shapes: `(None, 4)`, `[(None, 4), (None, 4)]`."""
    if not values or any(v.type is None for v in values):
        return "?"
    return _one_or_list([v.type.keras_shape() for v in values])


def _one_or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else "[" + ", ".join(items) + "]"


def _activation(operation: Layer | Nested | Value) -> str | None:
    """The layer's `activation` argument, for the layers that have one (a wrapper's is its inner layer's)."""
    if not isinstance(operation, Layer):
        return None
    config = operation.config["layer"].config if "layer" in operation.config else operation.config
    activation = config.get("activation")
    return None if activation is None else str(activation)
