"""Syntax tree to IR: resolve names, bind layer arguments, build one `Graph` per model.

Positional arguments of a layer call are its inputs when they are tensors (`dense(h, 10)`:
`h`) and its settings otherwise (`10` is `units`); a call with no tensor input is an
unapplied layer, which `|>`, `layer NAME = ...` and wrappers like `bidirectional` take.
A call of another model of the file (`code = Encoder(x)`) nests that model, as calling a
Keras model on tensors does; models may be written in any order, but none may call itself.
A `cell` of the file is one step of a recurrent cell, made with its arguments where `rnn`
takes it (`rnn(seq, MinimalGRU(32))`) into a `StepCell`, the step's own small graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kdsl import catalogue
from kdsl.catalogue.args import Arg, ArgError, Given, bind, boolean, positive_int, rate
from kdsl.catalogue.cells import STEP_REFUSED, CellRNN, CellSource, CellWeight, StepCell
from kdsl.catalogue.datasets import dataset
from kdsl.catalogue.functions import LOSSES, METRICS, OPTIMIZERS, RawCall
from kdsl.catalogue.operations import CALLABLE, NEGATIVE, OPERATIONS, Operation, is_number
from kdsl.catalogue.recurrent import Recurrent
from kdsl.errors import (
    KdslArgumentError,
    KdslError,
    KdslNameError,
    KdslShapeError,
    KdslSyntaxError,
    KdslUnsupportedError,
    Span,
    did_you_mean,
)
from kdsl.ir.graph import Graph, Layer, LayerSpec, LossTerm, Nested, NestedCall, Node, TrainSpec, Value
from kdsl.ir.nesting import call_nested, check_count, nest
from kdsl.ir.types import BATCH, DTYPE_ALIASES, TensorType
from kdsl.lang import ast
from kdsl.lang.format import format_setting
from kdsl.naming import LayerNamer, is_valid_name

RESERVED = {"true", "false", "none", "True", "False", "None"}
CALL_KEYWORDS_REFUSED = {
    "mask": "masks come from `embedding(..., mask_zero=true)` and flow to the layers after it",
    "training": "training and inference modes are chosen by `fit` and `predict`",
}


@dataclass
class Program:
    """The models of one `.kd` file, in the order they were written."""

    file: str
    models: dict[str, Graph] = field(default_factory=dict)

    def model(self, name: str | None = None) -> Graph:
        """The model `name`; without one, the file's only model that no other model calls."""
        if name is None:
            called = {
                step.layer.name
                for graph in self.models.values()
                for step in graph.calls()
                if isinstance(step, NestedCall)
            }
            uncalled = [graph for graph in self.models.values() if graph.name not in called]
            if len(uncalled) != 1:
                raise KdslNameError(
                    f"{self.file} defines {len(self.models)} models; say which one",
                    hint=f"models: {', '.join(self.models) or 'none'}",
                )
            return uncalled[0]
        if name not in self.models:
            raise KdslNameError(
                f"{self.file} has no model `{name}`",
                hint=did_you_mean(name, self.models) or f"models: {', '.join(self.models) or 'none'}",
            )
        return self.models[name]


def elaborate(module: ast.Module) -> Program:
    """Every model of the module as a graph, with its train block attached."""
    try:
        return _elaborate(module)
    except RecursionError:
        first = next((item.span for item in module.items), None)
        raise KdslSyntaxError(
            "expressions are nested too deeply", first, hint="assign inner results to names first"
        ) from None


def _elaborate(module: ast.Module) -> Program:
    program = Program(module.file)
    models = _Models()
    for item in module.items:
        if isinstance(item, ast.ModelDef | ast.CellDef):
            name = item.name.id
            if name in models.defs or name in models.cells:
                first = "model" if name in models.defs else "cell"
                raise KdslNameError(f"{first} `{name}` is defined twice", item.name.span)
            if isinstance(item, ast.CellDef):
                if catalogue.lookup(name) or name in CALLABLE:
                    raise KdslNameError(f"`{name}` is already a layer name; pick another", item.name.span)
                models.cells[name] = item
            else:
                models.defs[name] = item
    program.models = {name: models.graph(name) for name in models.defs}
    for item in module.items:
        if isinstance(item, ast.TrainDef):
            model = item.model.id
            if model not in program.models:
                raise KdslNameError(
                    f"train block for unknown model `{model}`",
                    item.model.span,
                    hint=did_you_mean(model, program.models) or f"models: {', '.join(program.models) or 'none'}",
                )
            graph = program.models[model]
            if graph.train is not None:
                raise KdslNameError(f"model `{model}` has two train blocks", item.model.span)
            graph.train = _train_spec(item, graph)
    return program


# --- arguments as plain values ------------------------------------------------------------------


def config_value(expr: ast.Expr) -> Any:
    """A setting as a plain value: names become identifiers, non-layer calls `RawCall`s."""
    if isinstance(expr, ast.Literal):
        return expr.value
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.ListExpr):
        return [config_value(item) for item in expr.items]
    if isinstance(expr, ast.Call):
        return RawCall(expr.func.id, _given(expr.args, expr.keywords, config_value), expr.span)
    if isinstance(expr, ast.Negative):
        return _fold("negative", [config_value(expr.operand)], expr.span)
    if isinstance(expr, ast.BinOp):
        return _fold(expr.op, [config_value(expr.left), config_value(expr.right)], expr.op_span)
    raise KdslArgumentError("a setting cannot be a `|>` pipeline", expr.span)


def _fold(op: str, operands: list[Any], span: Span) -> int | float:
    """Arithmetic on numbers alone, done at once: `units = 2 * 32` is 64, as in Python."""
    if not all(is_number(x) for x in operands):
        raise KdslArgumentError("a setting can be computed from numbers only", span)
    if op == "true_divide" and operands[1] == 0:
        raise KdslArgumentError("division by zero", span)
    return _PYTHON_ARITHMETIC[op](*operands)


_PYTHON_ARITHMETIC = {
    "add": lambda x, y: x + y,
    "subtract": lambda x, y: x - y,
    "multiply": lambda x, y: x * y,
    "true_divide": lambda x, y: x / y,
    "negative": lambda x: -x,
}


def _given(args: list[ast.Expr], keywords: list[ast.Keyword], convert) -> list[Given]:
    return [Given(convert(a), a.span) for a in args] + [
        Given(convert(k.value), k.value.span, k.name, k.span) for k in keywords
    ]


# --- models -------------------------------------------------------------------------------------


class _Tensors(list):
    """What an expression evaluates to when it denotes tensors (as opposed to a list of settings)."""


class _Unapplied:
    """A layer call without a tensor input, e.g. the `dense(10)` in `x |> dense(10)`."""

    def __init__(self, spec: LayerSpec, name: str | None, span: Span):
        self.spec, self.name, self.span = spec, name, span

    def __str__(self) -> str:
        return format_setting(self.spec)

    def as_layer_spec(self) -> LayerSpec:
        if self.name is not None:
            raise ArgError("a layer inside a wrapper takes no `name`", hint="name the wrapper instead")
        return self.spec


class _Models:
    """The models of a file, each built when first asked for (by the file, or by a model that calls it)."""

    def __init__(self) -> None:
        self.defs: dict[str, ast.ModelDef] = {}
        self.cells: dict[str, ast.CellDef] = {}
        self.built: dict[str, Graph] = {}
        self.building: list[str] = []  # the models being built, each calling the next

    def graph(self, name: str, span: Span | None = None) -> Graph:
        if name in self.building:
            cycle = " -> ".join([*self.building[self.building.index(name) :], name])
            raise KdslArgumentError(
                f"model `{name}` calls itself ({cycle})",
                span,
                hint="a model can call only models that do not call it back",
            )
        if name not in self.built:
            self.building.append(name)
            self.built[name] = _ModelBuilder(self.defs[name], self).build()
            self.building.pop()
        return self.built[name]

    def cell(self, call: ast.Call) -> StepCell:
        """The cell `call` names, made with its arguments: `MinimalGRU(32)`, `MinimalGRU(units=32)`."""
        definition = self.cells[call.func.id]
        parameters = [p.id for p in definition.parameters]
        signature = f"{definition.name.id}({', '.join(parameters)})"
        if len(call.args) > len(parameters):
            raise KdslArgumentError(
                f"cell `{signature}` takes {len(parameters)} parameter(s), got {len(call.args) + len(call.keywords)}",
                call.span,
                hint=f"write `{signature}` with a value for each parameter",
            )
        bound = {name: config_value(arg) for name, arg in zip(parameters, call.args)}
        for keyword in call.keywords:
            if keyword.name not in parameters:
                raise KdslArgumentError(
                    f"cell `{signature}` has no parameter `{keyword.name}`",
                    keyword.span,
                    hint=did_you_mean(keyword.name, parameters) or f"its parameters: {', '.join(parameters) or 'none'}",
                )
            if keyword.name in bound:
                raise KdslArgumentError(f"parameter `{keyword.name}` is given twice", keyword.span)
            bound[keyword.name] = config_value(keyword.value)
        missing = [name for name in parameters if name not in bound]
        if missing:
            raise KdslArgumentError(
                f"cell `{signature}` takes {len(parameters)} parameter(s), got {len(bound)}",
                call.span,
                hint=f"give `{missing[0]}` too: `{signature}`",
            )
        return _CellBuilder(definition, self, {name: bound[name] for name in parameters}).build()


def _called_models(model: ast.ModelDef, names: dict[str, ast.ModelDef]) -> list[str]:
    """The models of the file that `model` calls (by name, or as a `|>` stage), in the order written."""
    found: list[str] = []

    def walk(expr: ast.Expr) -> None:
        if isinstance(expr, ast.Call):
            found.extend([expr.func.id] if expr.func.id in names else [])
            for inner in [*expr.args, *(keyword.value for keyword in expr.keywords)]:
                walk(inner)
        elif isinstance(expr, ast.Pipe):
            found.extend([expr.stage.id] if isinstance(expr.stage, ast.Name) and expr.stage.id in names else [])
            walk(expr.value)
            walk(expr.stage)
        elif isinstance(expr, ast.ListExpr):
            for item in expr.items:
                walk(item)
        elif isinstance(expr, ast.BinOp):
            walk(expr.left)
            walk(expr.right)
        elif isinstance(expr, ast.Negative):
            walk(expr.operand)

    for statement in model.body:
        walk(statement.value)
    return list(dict.fromkeys(found))


class _ModelBuilder:
    def __init__(self, model: ast.ModelDef, models: _Models):
        self.model = model
        self.models = models
        self.values: dict[str, Value] = {}
        self.shared: dict[str, Layer] = {}
        self.shared_used: set[str] = set()
        self.nested: dict[str, Nested] = {}
        self.nodes: list[Node] = []
        self.namer = LayerNamer()

    def build(self) -> Graph:
        inputs = [self.declare_input(decl) for decl in self.model.inputs]
        for name in _called_models(self.model, self.models.defs):  # named first, as a Keras model's layers are
            if name not in self.models.building:
                self.namer.avoid(layer.name for layer in self.models.graph(name).layers())
        self.run_body(self.model.body)
        outputs, declared, spans = [], [], []
        for out in self.model.outputs:
            if out.name.id not in self.values:
                raise KdslNameError(
                    f"output `{out.name.id}` is never assigned",
                    out.name.span,
                    hint=did_you_mean(out.name.id, self.values) or "assign it in the model body",
                )
            if self.values[out.name.id] in outputs:
                raise KdslNameError(f"output `{out.name.id}` is listed twice", out.name.span)
            outputs.append(self.values[out.name.id])
            declared.append(self.tensor_type(out.type) if out.type else None)
            spans.append(out.span)
        return Graph(self.model.name.id, inputs, outputs, self.nodes, declared, None, self.model.span, spans)

    def run_body(self, body: list[ast.Assign | ast.LayerDecl]) -> None:
        for statement in body:
            if isinstance(statement, ast.LayerDecl):
                self.declare_layer(statement)
            else:
                self.assign(statement)
        for name, layer in self.shared.items():
            if name not in self.shared_used:
                raise KdslNameError(f"layer `{name}` is declared but never called", layer.span)

    def declare_input(self, decl: ast.InputDecl) -> Value:
        name = decl.name.id
        if name in self.values:
            raise KdslNameError(f"input `{name}` is declared twice", decl.name.span)
        type_ = self.tensor_type(decl.type)
        fixed_batch = len(type_.dims) > 1 and isinstance(type_.dims[0], int)  # f32[4, ...]: for stateful RNNs
        if not type_.dims or not (type_.dims[0] == BATCH or fixed_batch):
            raise KdslShapeError(
                f"input `{name}` must start with the batch dimension",
                decl.type.span,
                hint=f"write `{decl.type.dtype.id}[batch, ...]`, or a number for a fixed batch size (stateful RNNs)",
            )
        value = Value(name, type_)
        self.values[name] = value
        return value

    def tensor_type(self, expr: ast.TensorTypeExpr) -> TensorType:
        dtype = DTYPE_ALIASES.get(expr.dtype.id)
        if dtype is None:
            raise KdslNameError(
                f"unknown element type `{expr.dtype.id}`",
                expr.dtype.span,
                hint=did_you_mean(expr.dtype.id, DTYPE_ALIASES) or "use f32 or i32",
            )
        dims = []
        for position, dim in enumerate(expr.dims):
            if isinstance(dim, ast.Literal):
                if dim.value <= 0:
                    raise KdslShapeError(
                        f"dimension {dim.value} must be positive", dim.span, hint="sizes are whole numbers ≥ 1"
                    )
                dims.append(dim.value)
            else:
                if dim.id == BATCH and position != 0:
                    raise KdslShapeError(
                        "`batch` can only be the first dimension",
                        dim.span,
                        hint="name other variable sizes differently",
                    )
                dims.append(dim.id)
        return TensorType(dtype, tuple(dims))

    def declare_layer(self, decl: ast.LayerDecl) -> None:
        name = decl.name.id
        taken = catalogue.lookup(name) or name in CALLABLE or name in self.shared or name in RESERVED
        if taken or name in self.models.defs or name in self.models.cells:
            what = "model" if name in self.models.defs else "function" if name in CALLABLE else "layer"
            what = "cell" if name in self.models.cells else what
            raise KdslNameError(f"`{name}` is already a {what} name; pick another", decl.name.span)
        result = self.evaluate(decl.value)
        if not isinstance(result, _Unapplied):
            raise KdslArgumentError(
                f"`layer {name} = ...` needs a layer without inputs, like `lstm(units=32)`", decl.value.span
            )
        layer_name = result.name or name
        if not self.namer.reserve(layer_name):
            raise KdslNameError(f"layer name `{layer_name}` is used twice", decl.name.span)
        self.namer.wrapped(result.spec.config)
        self.shared[name] = Layer(layer_name, result.spec.kind, dict(result.spec.config), decl.span)

    def assign(self, statement: ast.Assign) -> None:
        for target in statement.targets:
            if target.id in RESERVED or target.id in self.shared:
                raise KdslNameError(f"cannot assign to `{target.id}`", target.span)
        first_new_node = len(self.nodes)
        result = self.evaluate(statement.value)
        if not isinstance(result, _Tensors):
            hint = (
                "give the layer an input: `dense(x, 10)` or `x |> dense(10)`"
                if isinstance(result, _Unapplied)
                else None
            )
            raise KdslArgumentError("the right side is not a tensor", statement.value.span, hint=hint)
        computed_here = {id(v) for node in self.nodes[first_new_node:] for v in node.outputs}
        if any(id(value) not in computed_here for value in result):
            raise KdslArgumentError(
                "this only gives another name to a tensor computed before",
                statement.span,
                hint="use the tensor's first name; a statement binds names to what a layer computes",
            )
        if len(result) != len(statement.targets):
            names = ", ".join(["out", *(f"state{i}" for i in range(1, len(result)))])
            raise KdslArgumentError(
                f"the right side gives {len(result)} tensor(s) but {len(statement.targets)} name(s) receive them",
                statement.span,
                hint=f"write `{names} = ...`" if len(result) > 1 else "remove the extra names",
            )
        for target, value in zip(statement.targets, result):
            value.name = target.id
            self.values[target.id] = value

    # -- expressions --

    def evaluate(self, expr: ast.Expr) -> Any:
        """Tensors come back as a list of `Value`s; layers as `_Unapplied` or `Layer`; the rest as settings."""
        if isinstance(expr, ast.Name):
            if expr.id in self.values:
                return _Tensors([self.values[expr.id]])
            if expr.id in self.shared:
                return self.shared[expr.id]
            return expr.id
        if isinstance(expr, ast.Literal):
            return expr.value
        if isinstance(expr, ast.ListExpr):
            items = [self.evaluate(item) for item in expr.items]
            if items and all(isinstance(item, _Tensors) for item in items):
                return _Tensors(value for item in items for value in item)
            return [self.setting(item, e) for item, e in zip(items, expr.items)]
        if isinstance(expr, ast.Pipe):
            value = self.single(self.evaluate(expr.value), expr.value)
            return self.apply_stage(expr.stage, value, expr.span)
        if isinstance(expr, ast.BinOp):
            operands = [self.operand(expr.left), self.operand(expr.right)]
            return self.operation(OPERATIONS[expr.op], operands, expr.op_span)
        if isinstance(expr, ast.Negative):
            return self.operation(NEGATIVE, [self.operand(expr.operand)], expr.span)
        return self.call(expr, None)

    def operand(self, expr: ast.Expr) -> Value | int | float:
        """An operand of arithmetic or of a `keras.ops` function: one tensor, or a number."""
        result = self.evaluate(expr)
        if isinstance(result, _Tensors):
            return self.single(result, expr)
        if is_number(result):
            return result
        if isinstance(expr, ast.Name) and isinstance(result, str):
            raise KdslNameError(
                f"unknown tensor `{expr.id}`",
                expr.span,
                hint=did_you_mean(expr.id, self.values) or f"tensors defined so far: {', '.join(self.values)}",
            )
        raise KdslArgumentError("arithmetic needs a tensor or a number here", expr.span)

    def operation(
        self, kind: Operation, operands: list[Value | int | float], span: Span, settings: dict | None = None
    ) -> Any:
        """A `keras.ops` function of tensors, as a node with no weights; of numbers alone, a number."""
        if all(is_number(x) for x in operands) and kind.function in _PYTHON_ARITHMETIC:
            return _fold(kind.function, operands, span)
        try:
            config = kind.config(operands, **(settings or {}))
        except KdslError as error:
            raise error.at(span) from None
        layer = Layer(self.namer.next(kind.default_name), kind, config, span)
        return self.apply(layer, [x for x in operands if isinstance(x, Value)], span)

    def operation_call(self, call: ast.Call, piped: Value | None) -> Any:
        """`tanh(x)`, `maximum(a, b)`, `softmax(x, axis=-1)`: a `keras.ops` function called by name."""
        kind = CALLABLE[call.func.id]
        operands = [piped] if piped is not None else []
        operands += [self.operand(arg) for arg in call.args]
        if len(operands) != kind.arity:
            raise KdslArgumentError(
                f"`{kind.function}` takes {kind.arity} tensor(s), got {len(operands)}",
                call.span,
                hint=f"write `{kind.function}({', '.join('xy'[: kind.arity])})`",
            )
        settings = {}
        for keyword in call.keywords:
            if keyword.name not in {arg.name for arg in kind.args}:
                raise KdslArgumentError(
                    f"`{kind.function}` takes no `{keyword.name}`",
                    keyword.span,
                    hint=f"it takes {', '.join(arg.name for arg in kind.args)}" if kind.args else None,
                )
            settings[keyword.name] = config_value(keyword.value)
        return self.operation(kind, operands, call.span, settings)

    def single(self, result: Any, expr: ast.Expr) -> Value:
        if not isinstance(result, _Tensors):
            raise KdslArgumentError("expected a tensor here", expr.span)
        if len(result) != 1:
            raise KdslArgumentError(
                f"this gives {len(result)} tensors, where one is expected",
                expr.span,
                hint="assign them to names first: `out, h, c = lstm(x, 32, return_state=true)`",
            )
        return result[0]

    def setting(self, result: Any, expr: ast.Expr) -> Any:
        if isinstance(result, _Tensors):
            raise KdslArgumentError(f"`{_text(expr)}` is a tensor; a setting was expected here", expr.span)
        if isinstance(result, Layer):
            raise KdslArgumentError(
                f"`{_text(expr)}` is a declared layer; a setting was expected here",
                expr.span,
                hint="wrappers take a fresh layer call such as `lstm(32)`",
            )
        return result

    def apply_stage(self, stage: ast.Expr, value: Value, span: Span) -> list[Value]:
        if isinstance(stage, ast.Call):
            return self.call(stage, value)
        if isinstance(stage, ast.Name):
            if stage.id in self.shared:
                return self.apply(self.shared_call(stage.id), [value], span)
            if catalogue.lookup(stage.id) or stage.id in self.models.defs or stage.id in CALLABLE:
                return self.call(ast.Call(stage, [], [], stage.span), value)
            if stage.id in self.values:
                raise KdslArgumentError(f"`{stage.id}` is a tensor; `|>` needs a layer on its right", stage.span)
            raise self.unknown_layer(stage)
        arithmetic = isinstance(stage, ast.BinOp | ast.Negative)
        raise KdslArgumentError(
            "`|>` needs a layer on its right, like `dense(10)`",
            stage.span,
            hint="`|>` binds loosest: `(x |> dense(8)) + x` adds after the layer" if arithmetic else None,
        )

    def shared_call(self, name: str) -> Layer:
        self.shared_used.add(name)
        return self.shared[name]

    def unknown_layer(self, name: ast.Name) -> KdslNameError:
        if name.id in self.values:
            return KdslNameError(f"`{name.id}` is a tensor, not a layer", name.span)
        known = catalogue.spellings() + list(CALLABLE) + list(self.shared) + list(self.models.defs)
        what = "layer or model" if len(self.models.defs) > 1 else "layer"
        return KdslNameError(
            f"unknown {what} `{name.id}`",
            name.span,
            hint=did_you_mean(name.id, known) or "`kdsl layers` lists them",
        )

    def call(self, call: ast.Call, piped: Value | None) -> Any:
        func = call.func.id
        inputs = [piped] if piped is not None else []
        if func in self.models.cells:
            raise self.misplaced_cell(call)
        if func in self.shared:
            layer = self.shared_call(func)
            for arg in call.args:
                inputs.extend(self.tensors(arg, hint="a declared layer's settings belong in its `layer` declaration"))
            states = self.call_keywords(call, layer.kind, allow_settings=False)
            return self.apply(layer, inputs, call.span, states)
        if func in self.models.defs:
            return self.call_model(call, inputs)
        if func in CALLABLE:
            return self.operation_call(call, piped)
        kind = catalogue.lookup(func)
        if kind is None:
            raise self.unknown_layer(call.func)
        given = []
        for arg in call.args:
            cell = self.cell_argument(arg, kind)
            if cell is not None:
                given.append(Given(cell, arg.span))
                continue
            result = self.argument(arg)
            if isinstance(result, _Tensors):
                inputs.extend(result)
            elif isinstance(arg, ast.Name) and isinstance(result, str) and not _fits_positional(kind, result):
                raise KdslNameError(
                    f"unknown tensor `{arg.id}`",
                    arg.span,
                    hint=did_you_mean(arg.id, self.values) or f"tensors defined so far: {', '.join(self.values)}",
                )
            else:
                given.append(Given(self.setting(result, arg), arg.span))
        name = None
        for keyword in call.keywords:
            if keyword.name == "name":
                name = config_value(keyword.value)
                if not is_valid_name(name):
                    raise KdslArgumentError('a layer `name` must be a name like "encoder"', keyword.value.span)
            elif keyword.name not in ("initial_state", *CALL_KEYWORDS_REFUSED):
                cell = self.cell_argument(keyword.value, kind)
                if cell is not None:
                    value = cell
                elif isinstance(keyword.value, ast.Name) and keyword.value.id in self.values:
                    value = keyword.value.id  # settings are never tensors: `activation=relu` beside a tensor `relu`
                else:
                    value = self.setting(self.argument(keyword.value), keyword.value)
                given.append(Given(value, keyword.value.span, keyword.name, keyword.span))
        config = kind.bind(given, call.span)
        states = self.call_keywords(call, kind, allow_settings=True)
        if isinstance(kind, CellWeight):
            return self.weight(kind, config, name, inputs, call)
        if not inputs:
            if states:
                raise KdslArgumentError("`initial_state` needs an input sequence too", call.span)
            return _Unapplied(LayerSpec(kind, config), name, call.span)
        if name is not None and not self.namer.reserve(name):
            raise KdslNameError(f"layer name `{name}` is used twice", call.span)
        self.namer.wrapped(config)
        layer = Layer(name or self.namer.next(kind.name), kind, config, call.span)
        return self.apply(layer, inputs, call.span, states)

    def weight(self, kind: CellWeight, config: dict, name: str | None, inputs: list, call: ast.Call) -> _Tensors:
        """A weight of one's own, `weight([k, n])`: only a cell holds one."""
        raise KdslUnsupportedError(
            "`weight` outside a cell", call.span, hint="a weight of one's own belongs to a `cell`; models use layers"
        )

    def cell_argument(self, expr: ast.Expr, kind: catalogue.LayerKind) -> StepCell | None:
        """A cell made for `rnn` (`rnn(seq, MinimalGRU(32))`; a bare `MinimalGRU` has no arguments); None where
        `expr` is not a cell."""
        call = ast.Call(expr, [], [], expr.span) if isinstance(expr, ast.Name) else expr
        if not isinstance(call, ast.Call) or call.func.id in self.values or call.func.id in self.shared:
            return None
        name = call.func.id
        if name in self.models.cells:
            if not isinstance(kind, CellRNN):
                raise self.misplaced_cell(call)
            return self.models.cell(call)
        known = self.is_layer_or_model(name) or name in CALLABLE
        if isinstance(kind, CellRNN) and isinstance(expr, ast.Call) and not known:
            raise KdslNameError(
                f"unknown cell `{name}`",
                call.func.span,
                hint=did_you_mean(name, self.models.cells)
                or "define it: `cell NAME(units) (x, h: f32[batch, units]) -> h { ... }`",
            )
        return None

    def misplaced_cell(self, call: ast.Call) -> KdslArgumentError:
        return KdslArgumentError(
            f"cell `{call.func.id}` is one step of a recurrent layer, not a tensor or a layer",
            call.span,
            hint=f"run it over a sequence: `rnn(seq, {call.func.id}(...))`",
        )

    def is_layer_or_model(self, name: str) -> bool:
        return catalogue.lookup(name) is not None or name in self.shared or name in self.models.defs

    def call_model(self, call: ast.Call, inputs: list[Value]) -> _Tensors:
        """Another model of the file called on tensors: its nodes inlined here, as one nested call of it."""
        name = call.func.id
        if catalogue.lookup(name):
            raise KdslNameError(
                f"`{name}` is both a model of this file and a layer", call.func.span, hint="rename the model"
            )
        if call.keywords:
            keyword = call.keywords[0]
            raise KdslArgumentError(
                f"model `{name}` takes only its inputs, not `{keyword.name}=`",
                keyword.span,
                hint="a model's settings belong in its own definition",
            )
        for arg in call.args:
            inputs.extend(self.tensors(arg, hint=f"model `{name}` takes only its input tensors"))
        if name not in self.nested:  # one nested model, however many times it is called: its weights are shared
            self.nested[name] = nest(self.models.graph(name, call.func.span), name)
        try:
            check_count(self.nested[name], len(inputs))
            nodes, nested_call = call_nested(self.nested[name], inputs, call.span)
        except KdslError as error:
            raise error.at(call.span) from None
        self.nodes += nodes
        return _Tensors(nested_call.outputs)

    def argument(self, expr: ast.Expr) -> Any:
        """An argument of a layer call: calls of things that are not layers (`l2(0.01)`) are settings,
        and a bare layer name (`time_distributed(flatten)`) is that layer with its defaults."""
        if isinstance(expr, ast.Call) and not self.is_layer_or_model(expr.func.id):
            if expr.func.id in CALLABLE and expr.args:  # `dense(tanh(x), 8)`; not a setting like `relu()`
                return self.evaluate(expr)
            return config_value(expr)
        if isinstance(expr, ast.Name) and expr.id not in self.values and catalogue.lookup(expr.id):
            return self.call(ast.Call(expr, [], [], expr.span), None)
        return self.evaluate(expr)

    def tensors(self, expr: ast.Expr, hint: str) -> list[Value]:
        result = self.evaluate(expr)
        if not isinstance(result, _Tensors):
            raise KdslArgumentError("tensors were expected here", expr.span, hint=hint)
        return result

    def call_keywords(self, call: ast.Call, kind: catalogue.LayerKind, allow_settings: bool) -> list[Value]:
        """Keywords that are not settings: `initial_state=[h, c]`; refuse `mask=` and `training=`."""
        states: list[Value] = []
        for keyword in call.keywords:
            if keyword.name in CALL_KEYWORDS_REFUSED:
                raise KdslUnsupportedError(
                    f"call argument `{keyword.name}` is not supported",
                    keyword.span,
                    hint=CALL_KEYWORDS_REFUSED[keyword.name],
                )
            if keyword.name == "initial_state":
                if not isinstance(kind, Recurrent):
                    raise KdslArgumentError(f"`{kind.name}` takes no `initial_state`", keyword.span)
                states = self.tensors(keyword.value, hint="initial states are tensors: `initial_state=[h, c]`")
            elif not allow_settings:
                raise KdslArgumentError(
                    f"`{call.func.id}` is a declared layer: its settings belong in its `layer` declaration",
                    keyword.span,
                )
        return states

    def apply(self, layer: Layer, inputs: list[Value], span: Span, states: list[Value] | None = None) -> list[Value]:
        kind = layer.kind
        limit = 1 if isinstance(kind, Recurrent) else kind.max_inputs
        if len(inputs) < kind.min_inputs or (limit is not None and len(inputs) > limit):
            expected = f"{kind.min_inputs}" + (f" to {limit}" if limit != kind.min_inputs else "")
            if limit is None:
                expected = f"at least {kind.min_inputs}"
            raise KdslArgumentError(
                f"`{kind.name}` takes {expected} input tensor(s), got {len(inputs)}",
                span,
                hint="pass states as `initial_state=[...]`"
                if isinstance(kind, Recurrent) and len(inputs) > 1
                else None,
            )
        outputs = [Value(layer.name) for _ in range(kind.num_outputs(layer.config))]
        self.nodes.append(Node(layer, [*inputs, *(states or [])], outputs, span))
        return _Tensors(outputs)


class _CellBuilder(_ModelBuilder):
    """The body of a `cell`, its parameters bound, as one step's graph: [x, *states] -> [output, *new states]."""

    def __init__(self, cell: ast.CellDef, models: _Models, bound: dict[str, Any]):
        super().__init__(cell, models)
        self.cell, self.bound = cell, bound
        self.assigned: dict[str, Span] = {}

    def build(self) -> StepCell:
        cell, name = self.cell, self.cell.name.id
        seen: dict[str, str] = {}
        declared = [(p, "parameter") for p in cell.parameters] + [(cell.step_input, "input")]
        for decl_name, what in declared + [(decl.name, "state") for decl in cell.states]:
            if decl_name.id in seen:
                raise KdslNameError(
                    f"`{decl_name.id}` is both a {seen[decl_name.id]} and a {what} of cell `{name}`", decl_name.span
                )
            seen[decl_name.id] = what
        if not cell.states:
            raise KdslArgumentError(
                f"cell `{name}` has no state",
                cell.step_input.span,
                hint=f"declare the states after the input: `({cell.step_input.id}, h: f32[batch, units])`",
            )
        step_input = Value(cell.step_input.id)  # typed by the `rnn` that runs the cell
        self.values[step_input.name] = step_input
        states = [self.declare_state(decl) for decl in cell.states]
        self.run_body(cell.body)
        new_states = []
        for decl, old in zip(cell.states, states):
            if self.values[decl.name.id] is old:
                raise KdslNameError(
                    f"state `{decl.name.id}` of cell `{name}` is never given a new value",
                    decl.name.span,
                    hint=f"assign it in the cell's body: `{decl.name.id} = ...`",
                )
            new_states.append(self.values[decl.name.id])
        if cell.output.id not in self.values:
            raise KdslNameError(
                f"output `{cell.output.id}` of cell `{name}` is never assigned",
                cell.output.span,
                hint=did_you_mean(cell.output.id, self.values) or "name a state or a tensor of the body",
            )
        graph = Graph(
            name, [step_input, *states], [self.values[cell.output.id], *new_states], self.nodes, span=cell.span
        )
        widths = tuple((decl.name.id, value.type.dims[1]) for decl, value in zip(cell.states, states))
        assigned = tuple(self.assigned[decl.name.id] for decl in cell.states)
        return StepCell(name, graph, widths, assigned, CellSource(cell.text(), tuple(self.bound.items())))

    def declare_state(self, decl: ast.InputDecl) -> Value:
        type_ = self.tensor_type(decl.type)
        if type_.dtype != "f32" or type_.rank != 2 or type_.dims[0] != BATCH:
            raise KdslShapeError(
                f"state `{decl.name.id}` must be f32[batch, units], got {type_}",
                decl.type.span,
                hint="a state is one vector per sample",
            )
        value = Value(decl.name.id, type_)
        self.values[decl.name.id] = value
        return value

    def tensor_type(self, expr: ast.TensorTypeExpr) -> TensorType:
        dims = [ast.Literal(self.parameter(d), d.span) if isinstance(d, ast.Name) and d.id in self.bound else d
                for d in expr.dims]  # fmt: skip
        return super().tensor_type(ast.TensorTypeExpr(expr.dtype, dims, expr.span))

    def parameter(self, name: ast.Name) -> int:
        value = self.bound[name.id]
        if isinstance(value, bool) or not isinstance(value, int):
            raise KdslShapeError(
                f"parameter `{name.id}` is `{value}` here, not a size", name.span, hint="sizes are whole numbers ≥ 1"
            )
        return value

    def assign(self, statement: ast.Assign) -> None:
        super().assign(statement)
        for target in statement.targets:
            self.assigned[target.id] = statement.span

    def evaluate(self, expr: ast.Expr) -> Any:
        if isinstance(expr, ast.Name) and expr.id in self.bound and expr.id not in self.values:
            return self.bound[expr.id]
        return super().evaluate(expr)

    def call(self, call: ast.Call, piped: Value | None) -> Any:
        func, cell = call.func.id, self.cell.name.id
        if func == cell:
            raise KdslArgumentError(f"cell `{cell}` calls itself", call.func.span, hint="a step cannot run a cell")
        if func in self.models.defs:
            raise KdslArgumentError(
                f"cell `{cell}` calls model `{func}`",
                call.func.span,
                hint="a step calls layers and operations; call the model before or after the `rnn`",
            )
        kind = catalogue.lookup(func)
        if kind is not None and kind.name in STEP_REFUSED:
            raise KdslUnsupportedError(
                f"`{kind.name}` cannot be called inside cell `{cell}`", call.func.span, hint=STEP_REFUSED[kind.name]
            )
        return super().call(call, piped)

    def weight(self, kind: CellWeight, config: dict, name: str | None, inputs: list, call: ast.Call) -> _Tensors:
        """A weight the cell holds itself: a node with no inputs whose value is the weight."""
        if inputs:
            raise KdslArgumentError("`weight` takes no tensor", call.span, hint="give its shape: `weight([28, 64])`")
        if name is not None and not self.namer.reserve(name):
            raise KdslNameError(f"layer name `{name}` is used twice", call.span)
        return self.apply(Layer(name or self.namer.next(kind.name), kind, config, call.span), [], call.span)


def _fits_positional(kind: catalogue.LayerKind, identifier: str) -> bool:
    """Whether a bare name can be one of the layer's positional settings (`activation(x, relu)`)."""
    for arg in kind.args:
        if arg.positional:
            try:
                arg.convert(identifier)
                return True
            except ArgError:
                pass
    return False


def _text(expr: ast.Expr) -> str:
    return expr.id if isinstance(expr, ast.Name) else "this"


# --- train blocks -------------------------------------------------------------------------------

TRAIN_SETTINGS = (
    Arg("optimizer", OPTIMIZERS, OPTIMIZERS("rmsprop")),
    Arg("batch_size", positive_int, 32),
    Arg("epochs", positive_int, 1),
    Arg("validation_split", rate, 0.0),
    Arg("shuffle", boolean, True),
    Arg("data", dataset, None),
)
PER_OUTPUT = ("loss", "metrics")


def _train_spec(train: ast.TrainDef, graph: Graph) -> TrainSpec:
    losses: dict[str | None, LossTerm] = {}
    metrics: dict[str | None, list] = {}
    given: list[Given] = []
    for setting in train.settings:
        key = setting.key.id
        output = setting.output.id if setting.output else None
        if key not in PER_OUTPUT:
            if setting.output is not None:
                raise KdslArgumentError(f"`{key}` applies to the whole model, not one output", setting.output.span)
            _no_options(setting)
            given.append(Given(config_value(setting.value), setting.value.span, key, setting.span))
            continue
        if output is not None and output not in graph.output_names:
            raise KdslNameError(
                f"model `{graph.name}` has no output `{output}`",
                setting.output.span,
                hint=did_you_mean(output, graph.output_names) or f"outputs: {', '.join(graph.output_names)}",
            )
        table = losses if key == "loss" else metrics
        if output in table or (table and (output is None) != (None in table)):
            raise KdslArgumentError(
                f"`{key}` is given twice"
                if output in table
                else f"give `{key}` either once for all outputs or per output",
                setting.span,
            )
        if key == "loss":
            losses[output] = LossTerm(_convert(LOSSES, setting.value), _weight(setting))
        else:
            _no_options(setting)
            items = setting.value.items if isinstance(setting.value, ast.ListExpr) else [setting.value]
            metrics[output] = [_convert(METRICS, item) for item in items]
    if not losses:
        raise KdslArgumentError(
            f"train block for `{graph.name}` has no `loss`",
            train.model.span,
            hint="e.g. `loss = sparse_categorical_crossentropy`",
        )
    if None not in losses:
        missing = [name for name in graph.output_names if name not in losses]
        if missing:
            raise KdslArgumentError(
                f"output `{missing[0]}` has no loss", train.model.span, hint=f"add `loss {missing[0]} = ...`"
            )
    settings = bind("train", TRAIN_SETTINGS, given, span=train.span)
    return TrainSpec(losses, metrics=metrics, span=train.span, **settings)


def _convert(table, expr: ast.Expr):
    try:
        return table(config_value(expr))
    except ArgError as error:
        raise KdslArgumentError(error.message, expr.span, hint=error.hint) from None


def _weight(setting: ast.Setting) -> float:
    weight = 1.0
    for option in setting.options:
        if option.name != "weight":
            raise KdslArgumentError(
                f"unknown option `{option.name}`", option.span, hint="only `weight` may follow a loss"
            )
        value = config_value(option.value)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise KdslArgumentError("a loss weight is a number ≥ 0", option.value.span)
        weight = float(value)
    return weight


def _no_options(setting: ast.Setting) -> None:
    if setting.options:
        option = setting.options[0]
        raise KdslArgumentError(f"`{setting.key.id}` takes no `{option.name}`", option.span)
