"""IR back to `.kd` text (`model.to_kd()`): parsing the text gives back an equal graph. A model that nests
others comes after them, calling each by its name."""

from __future__ import annotations

from typing import Any

from kdsl import catalogue
from kdsl.catalogue.args import REQUIRED, FnSpec, format_value
from kdsl.catalogue.base import LayerKind
from kdsl.catalogue.functions import format_spec
from kdsl.catalogue.recurrent import Recurrent
from kdsl.errors import KdslUnsupportedError
from kdsl.ir.graph import Graph, Layer, LayerSpec, Nested, NestedCall, TrainSpec
from kdsl.naming import KEYWORDS, LayerNamer, is_valid_name

INDENT = "    "


def to_kd(*graphs: Graph) -> str:
    """The models (and their train blocks, if any) as `.kd` text, each after the models it nests, each once."""
    models: dict[str, Graph] = {}
    for graph in graphs:
        _with_nested(graph, models)
    texts = [_model_text(graph) for graph in models.values()]
    texts += [_train_text(graph.name, graph.train) for graph in models.values() if graph.train is not None]
    return "\n\n".join(texts) + "\n"


def _with_nested(graph: Graph, models: dict[str, Graph]) -> None:
    """Add to `models` the models `graph` nests, deeper ones first, then `graph`: a name may stand for one model."""
    for nested in graph.top_layers():
        if isinstance(nested, Nested):
            if not is_valid_name(nested.name) or catalogue.lookup(nested.name):
                raise KdslUnsupportedError(
                    f"nested model {nested.name!r} needs a name `.kd` can call it by, not a layer's",
                    hint="give the model a name like 'encoder' when making it",
                )
            _with_nested(nested.graph, models)
    known = models.setdefault(graph.name, graph)
    if known is not graph and known != graph:
        raise KdslUnsupportedError(
            f"two different models are named `{graph.name}`: `.kd` calls a model by its name",
            hint="give the models different names when making them",
        )


def format_setting(value: Any) -> str:
    if isinstance(value, FnSpec):
        return format_spec(value)
    if isinstance(value, LayerSpec):
        return _call_text(value.kind, value.config, [])
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_setting(v) for v in value) + "]"
    return format_value(value)


def non_default_settings(kind: LayerKind, config: dict[str, Any]) -> dict[str, Any]:
    defaults = kind.defaults()
    return {k: v for k, v in config.items() if k not in defaults or defaults[k] != v}


def _call_text(kind: LayerKind, config: dict[str, Any], leading: list[str], name: str | None = None) -> str:
    """`kind(inputs..., required settings..., other=settings)`: required positional settings go by position."""
    settings = non_default_settings(kind, config)
    parts = list(leading)
    for arg in kind.args:
        if arg.positional and arg.default is REQUIRED:
            parts.append(format_setting(settings.pop(arg.name)))
        else:
            break
    parts += [f"{k}={format_setting(v)}" for k, v in settings.items()]
    if name is not None:
        parts.append(f"name={name}")
    return f"{kind.name}({', '.join(parts)})"


class _Names:
    """Fresh, valid names for the tensors and shared layers of the printed model."""

    def __init__(self, graph: Graph, models: set[str]):
        self.used = set(KEYWORDS) | models | {v.name for v in (*graph.inputs, *graph.outputs)}
        self.of: dict[int, str] = {id(v): v.name for v in (*graph.inputs, *graph.outputs)}

    def fresh(self, base: str) -> str:
        name, count = base, 0
        while name in self.used:
            count += 1
            name = f"{base}_{count}"
        self.used.add(name)
        return name


def _model_text(graph: Graph) -> str:
    nested = [op for op in graph.top_layers() if isinstance(op, Nested)]
    names = _Names(graph, {model.name for model in nested})
    namer = LayerNamer()
    namer.avoid(layer.name for model in nested for layer in model.graph.layers())  # as the parser names them
    steps = graph.calls()
    calls: dict[int, int] = {}
    for step in steps:
        calls[id(step.layer)] = calls.get(id(step.layer), 0) + 1
    shared: dict[int, str] = {}
    body: list[str] = []
    for layer in graph.top_layers():
        if isinstance(layer, Layer) and calls[id(layer)] > 1:
            variable = layer.name
            while variable in names.used or catalogue.lookup(variable):
                variable += "_layer"
            names.used.add(variable)
            shared[id(layer)] = variable
            namer.reserve(layer.name)
            own_name = layer.name if variable != layer.name else None
            body.append(f"layer {variable} = {_call_text(layer.kind, layer.config, [], own_name)}")
    for node in steps:
        layer = node.layer
        recurrent = not isinstance(node, NestedCall) and isinstance(layer.kind, Recurrent)
        split = 1 if recurrent else len(node.inputs)
        inputs = [names.of[id(v)] for v in node.inputs[:split]]
        states = [names.of[id(v)] for v in node.inputs[split:]]
        if isinstance(node, NestedCall):
            call = f"{layer.name}({', '.join(inputs)})"
        elif id(layer) in shared:
            call = f"{shared[id(layer)]}({', '.join(inputs)}"
            call += f", initial_state=[{', '.join(states)}])" if states else ")"
        else:
            explicit = None if namer.peek(layer.kind.name) == layer.name else layer.name
            if explicit is None:
                namer.next(layer.kind.name)
            else:
                namer.reserve(explicit)
            call = _call_text(layer.kind, layer.config, inputs, explicit)
            if states:
                call = call[:-1] + f", initial_state=[{', '.join(states)}])"
        targets = []
        for value in node.outputs:
            if id(value) not in names.of:
                names.of[id(value)] = names.fresh(value.name)
            targets.append(names.of[id(value)])
        body.append(f"{', '.join(targets)} = {call}")
    inputs = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs)
    outputs = [
        f"{v.name}: {declared}" if declared is not None else v.name
        for v, declared in zip(graph.outputs, graph.declared_outputs or [None] * len(graph.outputs))
    ]
    signature = outputs[0] if len(outputs) == 1 else f"({', '.join(outputs)})"
    lines = [f"model {graph.name}({inputs}) -> {signature} {{", *(INDENT + line for line in body), "}"]
    return "\n".join(lines)


def _train_text(model: str, train: TrainSpec) -> str:
    lines = [] if train.data is None else [f"data = {format_value(train.data)}"]
    for output, term in train.losses.items():
        key = "loss" if output is None else f"loss {output}"
        weight = f", weight {format_value(term.weight)}" if term.weight != 1.0 else ""
        lines.append(f"{key} = {format_spec(term.loss)}{weight}")
    lines.append(f"optimizer = {format_spec(train.optimizer)}")
    for output, metrics in train.metrics.items():
        key = "metrics" if output is None else f"metrics {output}"
        lines.append(f"{key} = [{', '.join(format_spec(m) for m in metrics)}]")
    defaults = TrainSpec({}, train.optimizer)
    for key in ("batch_size", "epochs", "validation_split", "shuffle"):
        if getattr(train, key) != getattr(defaults, key):
            lines.append(f"{key} = {format_value(getattr(train, key))}")
    return "\n".join([f"train {model} {{", *(INDENT + line for line in lines), "}"])
