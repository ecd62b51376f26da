"""The syntax tree of a `.kd` file: what was written, where, before any meaning is given to it."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from kdsl.errors import Span


@dataclass
class Name:
    id: str
    span: Span = field(compare=False, repr=False)


@dataclass
class Literal:
    """A number, string, `true`/`false` or `none`."""

    value: int | float | str | bool | None
    span: Span = field(compare=False, repr=False)


@dataclass
class ListExpr:
    items: list[Expr]
    span: Span = field(compare=False, repr=False)


@dataclass
class Keyword:
    name: str
    value: Expr
    span: Span = field(compare=False, repr=False)


@dataclass
class Call:
    func: Name
    args: list[Expr]
    keywords: list[Keyword]
    span: Span = field(compare=False, repr=False)


@dataclass
class Pipe:
    """`value |> stage`: the stage (a layer) applied to the value."""

    value: Expr
    stage: Expr
    span: Span = field(compare=False, repr=False)


@dataclass
class BinOp:
    """`left + right` and the other arithmetic operators, by the name of their operation (`add`, `true_divide`)."""

    op: str
    left: Expr
    right: Expr
    span: Span = field(compare=False, repr=False)
    op_span: Span = field(compare=False, repr=False)  # the operator itself, where errors point


@dataclass
class Negative:
    """`-operand` of a tensor (a minus before a number makes a negative number)."""

    operand: Expr
    span: Span = field(compare=False, repr=False)


Expr = Name | Literal | ListExpr | Call | Pipe | BinOp | Negative


@dataclass
class TensorTypeExpr:
    dtype: Name
    dims: list[Name | Literal]
    span: Span = field(compare=False, repr=False)


@dataclass
class InputDecl:
    name: Name
    type: TensorTypeExpr
    span: Span = field(compare=False, repr=False)


@dataclass
class OutputDecl:
    name: Name
    type: TensorTypeExpr | None
    span: Span = field(compare=False, repr=False)


@dataclass
class Assign:
    targets: list[Name]
    value: Expr
    span: Span = field(compare=False, repr=False)


@dataclass
class LayerDecl:
    name: Name
    value: Expr
    span: Span = field(compare=False, repr=False)


@dataclass
class ModelDef:
    name: Name
    inputs: list[InputDecl]
    outputs: list[OutputDecl]
    body: list[Assign | LayerDecl]
    span: Span = field(compare=False, repr=False)


@dataclass
class CellDef:
    """`cell NAME(parameters) (x, state: type, ...) -> output { ... }`: one step of a recurrent cell."""

    name: Name
    parameters: list[Name]
    step_input: Name
    states: list[InputDecl]
    output: Name
    body: list[Assign | LayerDecl]
    span: Span = field(compare=False, repr=False)

    def text(self) -> str:
        """The definition as written (less the indentation of its first line), for printing a model that uses the
        cell back to `.kd` text."""
        span = self.span
        lines = (span.source or "").split("\n")[span.line - 1 : span.end_line]
        if not lines:
            return ""
        lines[-1] = lines[-1][: span.end_column]
        indent, lines[0] = lines[0][: span.column - 1], lines[0][span.column - 1 :]
        return "\n".join([lines[0], *(line.removeprefix(indent) for line in lines[1:])])


@dataclass
class Setting:
    """`key [output] = value [, weight 0.2]` inside a train block."""

    key: Name
    output: Name | None
    value: Expr
    options: list[Keyword]
    span: Span = field(compare=False, repr=False)


@dataclass
class TrainDef:
    model: Name
    settings: list[Setting]
    span: Span = field(compare=False, repr=False)


@dataclass
class Module:
    file: str
    items: list[ModelDef | TrainDef | CellDef]


def dump(node: object, indent: int = 0) -> str:
    """A readable, indented rendering of a syntax tree (`kdsl compile --emit ast`)."""
    pad = "  " * indent
    if isinstance(node, list):
        return "\n".join(dump(item, indent) for item in node) if node else f"{pad}[]"
    if isinstance(node, Name):
        return f"{pad}Name {node.id}"
    if isinstance(node, Literal):
        return f"{pad}Literal {node.value!r}"
    if isinstance(node, BinOp):
        where = f"  @{node.op_span.line}:{node.op_span.column}"
        return "\n".join([f"{pad}BinOp {node.op}{where}", dump(node.left, indent + 1), dump(node.right, indent + 1)])
    if not hasattr(node, "__dataclass_fields__"):
        return f"{pad}{node!r}"
    where = f"  @{node.span.line}:{node.span.column}" if hasattr(node, "span") else ""
    lines = [f"{pad}{type(node).__name__}{where}"]
    for f in fields(node):
        if f.name in ("span", "file"):
            continue
        value = getattr(node, f.name)
        if value is None or value == []:
            continue
        if isinstance(value, str):
            lines.append(f"{pad}  {f.name}: {value}")
        else:
            lines.append(f"{pad}  {f.name}:")
            lines.append(dump(value, indent + 2))
    return "\n".join(lines)
