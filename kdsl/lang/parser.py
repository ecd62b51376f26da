"""Text to syntax tree: the Lark LALR parser and friendly syntax errors."""

from __future__ import annotations

import functools
import re
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    LarkError,
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)

from kdsl.errors import KdslError, KdslSyntaxError, Span
from kdsl.lang import ast

_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "n": "\n", "t": "\t"}
KEYWORD_LITERALS = {"true": True, "True": True, "false": False, "False": False, "none": None, "None": None}


@functools.cache
def _parser() -> Lark:
    grammar = resources.files("kdsl.lang").joinpath("kdsl.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", propagate_positions=True, maybe_placeholders=True)


class _ToAst(Transformer):
    """Builds `kdsl.lang.ast` nodes, each with the span of the text it came from."""

    def __init__(self, file: str, text: str):
        super().__init__()
        self.file = file
        self.text = text

    def span(self, meta) -> Span:
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column - 1, self.text)

    def name_of(self, token: Token) -> ast.Name:
        return ast.Name(str(token), self.span(token))

    @v_args(meta=True)
    def start(self, meta, items):
        return ast.Module(self.file, items)

    @v_args(meta=True)
    def model(self, meta, children):
        # children: NAME, input* (None where an optional part is absent), outputs, statement*
        name = children[0]
        inputs = [c for c in children[1:] if isinstance(c, ast.InputDecl)]
        outputs = next(c for c in children if isinstance(c, list))
        body = [c for c in children if isinstance(c, (ast.Assign, ast.LayerDecl))]
        return ast.ModelDef(self.name_of(name), inputs, outputs, body, self.span(meta))

    @v_args(meta=True)
    def cell(self, meta, children):
        # children: NAME, parameters, NAME (the step input), input* (None for a trailing comma), NAME, statement*
        name, parameters, step_input, *rest = [c for c in children if c is not None]
        states = [c for c in rest if isinstance(c, ast.InputDecl)]
        output = next(c for c in rest if isinstance(c, Token))
        body = [c for c in rest if isinstance(c, (ast.Assign, ast.LayerDecl))]
        return ast.CellDef(
            self.name_of(name),
            parameters,
            self.name_of(step_input),
            states,
            self.name_of(output),
            body,
            self.span(meta),
        )

    def cell_parameters(self, children):
        return [self.name_of(c) for c in children if c is not None]

    @v_args(meta=True)
    def input(self, meta, children):
        name, type_ = children
        return ast.InputDecl(self.name_of(name), type_, self.span(meta))

    def outputs(self, children):
        return [c for c in children if c is not None]

    @v_args(meta=True)
    def output(self, meta, children):
        name, type_ = children
        return ast.OutputDecl(self.name_of(name), type_, self.span(meta))

    @v_args(meta=True)
    def tensor_type(self, meta, children):
        dtype, *dims = children
        return ast.TensorTypeExpr(self.name_of(dtype), [d for d in dims if d is not None], self.span(meta))

    def dim(self, children):
        (token,) = children
        if token.type == "INT":
            return ast.Literal(int(token), self.span(token))
        return self.name_of(token)

    @v_args(meta=True)
    def negative_dim(self, meta, children):
        return ast.Literal(-int(children[0]), self.span(meta))

    @v_args(meta=True)
    def layer_decl(self, meta, children):
        name, value = children
        return ast.LayerDecl(self.name_of(name), value, self.span(meta))

    @v_args(meta=True)
    def assign(self, meta, children):
        *targets, value = children
        return ast.Assign([self.name_of(t) for t in targets], value, self.span(meta))

    @v_args(meta=True)
    def train(self, meta, children):
        model, *settings = children
        return ast.TrainDef(self.name_of(model), settings, self.span(meta))

    @v_args(meta=True)
    def setting(self, meta, children):
        key, output, value, *rest = children
        options = [ast.Keyword(str(rest[i]), rest[i + 1], self.span(rest[i])) for i in range(0, len(rest), 2)]
        return ast.Setting(
            self.name_of(key), self.name_of(output) if output is not None else None, value, options, self.span(meta)
        )

    @v_args(meta=True)
    def pipe(self, meta, children):
        value, stage = children
        return ast.Pipe(value, stage, self.span(meta))

    def _binary(self, op: str, meta, children) -> ast.BinOp:
        left, right = children
        at = left.span
        operator = _operator_after(self.text, at.end_line, at.end_column)
        return ast.BinOp(op, left, right, self.span(meta), _point(self.text, self.file, *operator))

    @v_args(meta=True)
    def add(self, meta, children):
        return self._binary("add", meta, children)

    @v_args(meta=True)
    def subtract(self, meta, children):
        return self._binary("subtract", meta, children)

    @v_args(meta=True)
    def multiply(self, meta, children):
        return self._binary("multiply", meta, children)

    @v_args(meta=True)
    def true_divide(self, meta, children):
        return self._binary("true_divide", meta, children)

    @v_args(meta=True)
    def negative(self, meta, children):
        (operand,) = children
        if isinstance(operand, ast.Literal) and type(operand.value) in (int, float):
            return ast.Literal(-operand.value, self.span(meta))
        return ast.Negative(operand, self.span(meta))

    @v_args(meta=True)
    def name(self, meta, children):
        (token,) = children
        if str(token) in KEYWORD_LITERALS:
            return ast.Literal(KEYWORD_LITERALS[str(token)], self.span(meta))
        return self.name_of(token)

    @v_args(meta=True)
    def int(self, meta, children):
        return ast.Literal(int(children[0]), self.span(meta))

    @v_args(meta=True)
    def float(self, meta, children):
        return ast.Literal(float(children[0]), self.span(meta))

    @v_args(meta=True)
    def string(self, meta, children):
        raw = str(children[0])[1:-1]

        def unescape(match: re.Match) -> str:
            escape = match.group(0)
            if escape[1] in _ESCAPES:
                return _ESCAPES[escape[1]]
            raise KdslSyntaxError(
                f"unknown escape `{escape}` in a string", self.span(meta), hint=r"use \\ for a backslash"
            )

        return ast.Literal(re.sub(r"\\.", unescape, raw), self.span(meta))

    @v_args(meta=True)
    def call(self, meta, children):
        func, *arguments = children
        arguments = [a for a in arguments if a is not None]
        positional = [a for a in arguments if not isinstance(a, ast.Keyword)]
        keywords = [a for a in arguments if isinstance(a, ast.Keyword)]
        return ast.Call(self.name_of(func), positional, keywords, self.span(meta))

    @v_args(meta=True)
    def keyword(self, meta, children):
        name, value = children
        return ast.Keyword(str(name), value, self.span(meta))

    @v_args(meta=True)
    def list(self, meta, children):
        return ast.ListExpr([c for c in children if c is not None], self.span(meta))


def parse(text: str, file: str = "<string>") -> ast.Module:
    """Parse `.kd` text; every failure is a `KdslError` that points into the text."""
    try:
        tree = _parser().parse(text)
        return _ToAst(file, text).transform(tree)
    except UnexpectedInput as error:
        raise _syntax_error(error, text, file) from None
    except VisitError as error:
        if isinstance(error.orig_exc, KdslError):
            raise error.orig_exc from None
        raise KdslSyntaxError(f"cannot read this text: {error.orig_exc}", _point(text, file, 1, 1)) from None
    except RecursionError:
        raise KdslSyntaxError("expressions are nested too deeply", _point(text, file, 1, 1)) from None
    except LarkError as error:  # any other parser failure still reaches the user as a KdslError
        raise KdslSyntaxError(str(error), _point(text, file, 1, 1)) from None


def parse_file(path: str | Path) -> ast.Module:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise KdslError(f"cannot read {path}: {error}") from None
    return parse(text, str(path))


def _point(text: str, file: str, line: int, column: int, width: int = 1) -> Span:
    return Span(file, line, column, line, column + width - 1, text)


def _operator_after(text: str, line: int, column: int) -> tuple[int, int]:
    """Where the operator after a left operand ending at (line, column) is: past spaces, comments and `)`."""
    lines = text.split("\n")
    row, col = line - 1, column  # col indexes the character after the operand
    while row < len(lines):
        rest = lines[row][col:]
        stripped = rest.lstrip(" \t\f\r)")
        if stripped and not stripped.startswith("#"):
            return row + 1, col + len(rest) - len(stripped) + 1
        row, col = row + 1, 0
    return line, column


def _describe(terminal: str) -> str:
    """How a grammar terminal reads in an error message."""
    words = {
        "NAME": "a name",
        "INT": "a whole number",
        "FLOAT": "a number",
        "STRING": "a string",
        "$END": "the end of the file",
    }
    if terminal in words:
        return words[terminal]
    for definition in _parser().terminals:
        if definition.name == terminal and definition.pattern.type == "str":
            return f"`{definition.pattern.value}`"
    return terminal.lower()


def _syntax_error(error: UnexpectedInput, text: str, file: str) -> KdslSyntaxError:
    line, column = max(error.line, 1), max(error.column, 1)
    if isinstance(error, UnexpectedCharacters):
        char = text[error.pos_in_stream] if error.pos_in_stream < len(text) else ""
        return KdslSyntaxError(
            f"unexpected character {char!r}",
            _point(text, file, line, column),
            hint="names are letters, digits and `_`; comments start with `#`",
        )
    if isinstance(error, UnexpectedEOF) or (isinstance(error, UnexpectedToken) and error.token.type == "$END"):
        opener = _unclosed_bracket(text)
        if opener is not None:
            char, line, column = opener
            return KdslSyntaxError(
                f"`{char}` is never closed", _point(text, file, line, column), hint=f"add the matching `{_CLOSE[char]}`"
            )
        lines = text.split("\n")
        return KdslSyntaxError(
            "the file ends in the middle of a definition",
            _point(text, file, len(lines), len(lines[-1]) + 1),
            hint=f"expected {_one_of(sorted({_describe(t) for t in error.expected}))}",
        )
    assert isinstance(error, UnexpectedToken)
    token = error.token
    expected = sorted({_describe(t) for t in error.expected})
    found = str(token)
    return KdslSyntaxError(
        f"unexpected `{found}`",
        _point(text, file, line, column, max(1, len(found))),
        hint=_hint(found, expected),
    )


_CLOSE = {"(": ")", "[": "]", "{": "}"}


def _unclosed_bracket(text: str) -> tuple[str, int, int] | None:
    """The innermost bracket left open at the end of the text, skipping comments and strings."""
    stack: list[tuple[str, int, int]] = []
    line, column, quote, comment = 1, 0, None, False
    for char in text:
        column += 1
        if char == "\n":
            line, column, comment, quote = line + 1, 0, False, None
        elif comment:
            continue
        elif quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#":
            comment = True
        elif char in _CLOSE:
            stack.append((char, line, column))
        elif stack and char == _CLOSE[stack[-1][0]]:
            stack.pop()
    return stack[-1] if stack else None


def _hint(found: str, expected: list[str]) -> str:
    if "`=`" in expected and len(expected) <= 3:
        return f"expected {_one_of(expected)}: a statement is `name = layer(...)`"
    if "`,`" in expected and "`)`" in expected:
        return "expected `,` between arguments or `)` to close the call"
    return f"expected {_one_of(expected)}"


def _one_of(options: list[str]) -> str:
    if len(options) <= 1:
        return options[0] if options else "something else"
    if len(options) > 8:
        options = [*options[:8], "…"]
    return ", ".join(options[:-1]) + " or " + options[-1]
