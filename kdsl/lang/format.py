"""IR back to `.kd` text (`model.to_kd()`): parsing the text gives back an equal graph. A model that nests
others comes after them, calling each by its name; the cells its `rnn` layers run come first, as written."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kdsl import catalogue
from kdsl.catalogue.args import REQUIRED, FnSpec, format_value
from kdsl.catalogue.base import LayerKind
from kdsl.catalogue.cells import StepCell
from kdsl.catalogue.functions import format_spec
from kdsl.catalogue.operations import CALLABLE, Operation
from kdsl.catalogue.recurrent import Recurrent
from kdsl.errors import KdslUnsupportedError
from kdsl.ir.graph import Graph, Layer, LayerSpec, Nested, NestedCall, Node, TrainSpec
from kdsl.naming import KEYWORDS, LayerNamer, is_valid_name

INDENT = "    "


def to_kd(*graphs: Graph) -> str:
    """The models (and their train blocks, if any) as `.kd` text, each after the models it nests, each once."""
    models: dict[str, Graph] = {}
    for graph in graphs:
        _with_nested(graph, models)
    texts = _cell_texts(models.values())
    texts += [_model_text(graph) for graph in models.values()]
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


def _cell_texts(graphs: Iterable[Graph]) -> list[str]:
    """The definition of each cell the models run, once, in the order of their first use."""
    definitions: dict[str, str] = {}
    for graph in graphs:
        for layer in graph.layers():
            for cell in _cells_in(layer.config):
                definition = _traced_cell_text(cell) if cell.source is None else cell.source.definition
                known = definitions.setdefault(cell.name, definition)
                if known != definition:
                    raise KdslUnsupportedError(
                        f"two different cells are named `{cell.name}`: `.kd` makes a cell by its name",
                        hint="give the cells different names",
                    )
    return list(definitions.values())


def _cells_in(config: Mapping[str, Any]) -> list[StepCell]:
    """The cells a layer's configuration holds (a wrapper's layer's too)."""
    found: list[StepCell] = []
    for value in config.values():
        if isinstance(value, StepCell):
            found.append(value)
        elif isinstance(value, LayerSpec):
            found += _cells_in(value.config)
    return found


def format_setting(value: Any) -> str:
    if isinstance(value, StepCell):
        return str(value)
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

    def __init__(self, graph: Graph, models: set[str], given: Mapping[int, str] | None = None):
        """`given`: names of values (by id) other than their own, as a cell's new states take their states'."""
        self.of: dict[int, str] = {id(v): v.name for v in (*graph.inputs, *graph.outputs)}
        self.of.update(given or {})
        # not a function's name either: a tensor named `relu` would hide the setting `activation=relu`
        self.used = set(KEYWORDS) | models | set(CALLABLE) | set(self.of.values())

    def fresh(self, base: str) -> str:
        name, count = base, 0
        while name in self.used:
            count += 1
            name = f"{base}_{count}"
        self.used.add(name)
        return name


SUM, PRODUCT, UNARY, ATOM = 1, 2, 3, 4  # how tightly each form of expression binds
PRECEDENCE = {"+": SUM, "-": SUM, "*": PRODUCT, "/": PRODUCT}


class _Expressions:
    """Operations printed as arithmetic. An operation's result read once, by the next operation, is written inside
    that one's expression (`h = f * h + (1 - f) * c`) when the text then makes its nodes in the graph's order, which
    names them as the graph does; every other result gets a statement of its own."""

    def __init__(self, graph: Graph, names: _Names, body: list[str]):
        self.names, self.body = names, body
        self.reads: dict[int, list[Node | NestedCall]] = {}
        for step in graph.calls():
            for value in step.inputs:
                self.reads.setdefault(id(value), []).append(step)
        self.outputs = {id(value) for value in graph.outputs}
        self.pending: dict[int, tuple[str, int, list[Node]]] = {}  # value -> text, precedence, nodes in order

    def flush(self) -> None:
        """Give every expression still waiting for its reader a statement, in the order of its nodes."""
        for key, (text, _, nodes) in self.pending.items():
            if key not in self.names.of:  # a model output has its name already
                self.names.of[key] = self.names.fresh(nodes[-1].outputs[0].name)
            self.body.append(f"{self.names.of[key]} = {text}")
        self.pending = {}

    def add(self, node: Node) -> None:
        kind: Operation = node.layer.kind
        tensors = iter(node.inputs)
        operands = [next(tensors) if c is None else c for c in node.layer.config["constants"]]
        read = [id(x) for x in operands if not isinstance(x, float) and id(x) in self.pending]
        waiting = list(self.pending)
        if read != waiting[len(waiting) - len(read) :]:  # written inline, they would be made in another order
            self.flush()
            read = []
        texts = [self.operand(x) for x in operands]
        inlined = [self.pending.pop(key) for key in read]  # the rest waits below, for a later reader
        if kind.symbol is None:
            text, precedence = f"{kind.function}({', '.join(t for t, _ in texts)})", ATOM
        elif kind.arity == 1:
            text, precedence = f"-{_bracketed(texts[0], UNARY)}", UNARY
        else:
            precedence = PRECEDENCE[kind.symbol]
            left, right = _bracketed(texts[0], precedence), _bracketed(texts[1], precedence + 1)
            text = f"{left} {kind.symbol} {right}"
        (out,) = node.outputs
        readers = self.reads.get(id(out), [])
        nodes = [n for _, _, inner in inlined for n in inner] + [node]
        self.pending[id(out)] = (text, precedence, nodes)
        if id(out) in self.outputs or len(readers) != 1 or not _is_operation(readers[0]):
            self.flush()

    def operand(self, x) -> tuple[str, int]:
        if isinstance(x, float):
            return format_value(x), ATOM if x >= 0 else UNARY
        if id(x) in self.pending:
            text, precedence, _ = self.pending[id(x)]
            return text, precedence
        return self.names.of[id(x)], ATOM


def _is_operation(step: Node | NestedCall) -> bool:
    return isinstance(step, Node) and isinstance(step.layer.kind, Operation)


def _bracketed(operand: tuple[str, int], needed: int) -> str:
    text, precedence = operand
    return text if precedence >= needed else f"({text})"


def _model_text(graph: Graph) -> str:
    names = _Names(graph, {op.name for op in graph.top_layers() if isinstance(op, Nested)})
    inputs = ", ".join(f"{v.name}: {v.type}" for v in graph.inputs)
    outputs = [
        f"{v.name}: {declared}" if declared is not None else v.name
        for v, declared in zip(graph.outputs, graph.declared_outputs or [None] * len(graph.outputs))
    ]
    signature = outputs[0] if len(outputs) == 1 else f"({', '.join(outputs)})"
    lines = [f"model {graph.name}({inputs}) -> {signature} {{", *(INDENT + line for line in _body(graph, names)), "}"]
    return "\n".join(lines)


def _traced_cell_text(cell: StepCell) -> str:
    """A cell traced from Python, written as a `.kd` cell with no parameters: its new states assigned to its
    states' names."""
    step, *states = cell.graph.inputs
    output, *new = cell.graph.outputs
    if {id(value) for value in new} & {id(value) for value in cell.graph.inputs}:
        raise KdslUnsupportedError(f"cell `{cell.name}` returns a state unchanged, which `.kd` cannot write")
    given = {id(value): state.name for value, state in zip(new, states)}
    names = _Names(cell.graph, set(), given)
    typed = ", ".join(f"{state.name}: f32[batch, {width}]" for state, (_, width) in zip(states, cell.states))
    header = f"cell {cell.name}() ({step.name}, {typed}) -> {names.of[id(output)]} {{"
    return "\n".join([header, *(INDENT + line for line in _body(cell.graph, names)), "}"])


def _body(graph: Graph, names: _Names) -> list[str]:
    """A model's or a cell's statements."""
    nested = [op for op in graph.top_layers() if isinstance(op, Nested)]
    namer = LayerNamer()
    namer.avoid(layer.name for model in nested for layer in model.graph.layers())  # as the parser names them
    steps = graph.calls()
    calls: dict[int, int] = {}
    for step in steps:
        calls[id(step.layer)] = calls.get(id(step.layer), 0) + 1
    shared: dict[int, str] = {}
    body: list[str] = []
    expressions = _Expressions(graph, names, body)
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
        if _is_operation(node):
            if namer.peek(layer.kind.default_name) != layer.name:
                raise KdslUnsupportedError(
                    f"operation `{layer.name}` has a name `.kd` cannot give it",
                    hint=f"`.kd` names operations as Keras does: `{namer.peek(layer.kind.default_name)}` here",
                )
            namer.next(layer.kind.default_name)
            expressions.add(node)
            continue
        expressions.flush()
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
    expressions.flush()
    return body


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
