"""Arguments of layers and named functions: one schema, checked the same way from `.kd` text and Python.

A schema is a tuple of `Arg`s, each with a converter that either returns the normalised
value or raises `ArgError`. `bind` fills defaults, matches positional arguments in
order, and names the argument at fault (with a did-you-mean for unknown keywords).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kdsl.errors import KdslArgumentError, KdslUnsupportedError, Span, did_you_mean
from kdsl.naming import is_valid_name


class ArgError(Exception):
    """A value a converter rejects; `bind` turns it into a `KdslArgumentError` at the value's place."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


REQUIRED = object()

Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class Arg:
    name: str
    convert: Converter
    default: Any = REQUIRED
    positional: bool = False  # may be given by position, in schema order


@dataclass(frozen=True)
class FnSpec:
    """A named function with its bound arguments: `l2(0.01)`, `sgd(learning_rate=0.01)`, `random_normal()`."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name + "(" + ", ".join(f"{k}={format_value(v)}" for k, v in self.args.items()) + ")"


@dataclass
class Given:
    """One argument as the user gave it, with its place in the source when there is one."""

    value: Any
    span: Span | None = None  # where the value is written
    name: str | None = None  # None for a positional argument
    key_span: Span | None = None  # where `name=value` is written

    @property
    def whole_span(self) -> Span | None:
        return self.key_span or self.span


def bind(
    what: str,
    schema: Sequence[Arg],
    given: Sequence[Given],
    *,
    span: Span | None = None,
    unsupported: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Match `given` against `schema`; return every argument's normalised value, defaults filled in."""
    unsupported = unsupported or {}
    by_name = {arg.name: arg for arg in schema}
    positional_slots = [arg for arg in schema if arg.positional]
    raw: dict[str, Given] = {}
    position = 0
    for item in given:
        if item.name is None:
            if position >= len(positional_slots):
                names = ", ".join(a.name for a in positional_slots) or "none"
                raise KdslArgumentError(
                    f"`{what}` takes {len(positional_slots)} positional argument(s) ({names}), got more",
                    item.span or span,
                    hint="give the others by name, e.g. `activation=relu`",
                )
            arg = positional_slots[position]
            position += 1
        elif item.name in by_name:
            arg = by_name[item.name]
        elif item.name in unsupported:
            raise KdslUnsupportedError(
                f"`{what}` argument `{item.name}` is not supported",
                item.whole_span or span,
                hint=unsupported[item.name],
            )
        else:
            raise KdslArgumentError(
                f"`{what}` has no argument `{item.name}`",
                item.whole_span or span,
                hint=did_you_mean(item.name, by_name) or f"its arguments are {', '.join(by_name) or 'none'}",
            )
        if arg.name in raw:
            raise KdslArgumentError(f"`{what}` got argument `{arg.name}` twice", item.whole_span or span)
        raw[arg.name] = item
    bound: dict[str, Any] = {}
    for arg in schema:
        if arg.name in raw:
            item = raw[arg.name]
            try:
                bound[arg.name] = arg.convert(item.value)
            except ArgError as error:
                raise KdslArgumentError(
                    f"`{what}` argument `{arg.name}`: {error.message}", item.span or span, hint=error.hint
                ) from None
        elif arg.default is REQUIRED:
            raise KdslArgumentError(
                f"`{what}` needs the argument `{arg.name}`", span, hint=f"e.g. `{what}({arg.name}=...)`"
            )
        else:
            bound[arg.name] = arg.default
    return bound


def format_value(value: Any) -> str:
    """A value as `.kd` text: identifiers bare, strings quoted only where they are not names."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, str):
        if is_valid_name(value):
            return value
        escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
        return f'"{escaped}"'
    if isinstance(value, float):
        return repr(value)
    return str(value)


# --- converters -------------------------------------------------------------------------------


def describe(value: Any) -> str:
    return f"`{format_value(value)}`"


def integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgError(f"expected a whole number, got {describe(value)}")
    return value


def positive_int(value: Any) -> int:
    if integer(value) <= 0:
        raise ArgError(f"expected a positive whole number, got {describe(value)}")
    return value


def number(value: Any) -> float:
    """A finite number: what kdsl saves must parse back, and no setting means anything at infinity or NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgError(f"expected a number, got {describe(value)}")
    if not math.isfinite(value):
        raise ArgError(f"expected a finite number, got {value!r}")
    return float(value)


def non_negative(value: Any) -> float:
    if number(value) < 0:
        raise ArgError(f"expected a number ≥ 0, got {describe(value)}")
    return float(value)


def positive(value: Any) -> float:
    if number(value) <= 0:
        raise ArgError(f"expected a number > 0, got {describe(value)}")
    return float(value)


def rate(value: Any) -> float:
    """A dropout-like fraction in [0, 1)."""
    if not 0 <= number(value) < 1:
        raise ArgError(f"expected a fraction in [0, 1), got {describe(value)}")
    return float(value)


def unit_interval(value: Any) -> float:
    if not 0 <= number(value) <= 1:
        raise ArgError(f"expected a number in [0, 1], got {describe(value)}")
    return float(value)


def boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgError(f"expected `true` or `false`, got {describe(value)}")
    return value


def optional(convert: Converter) -> Converter:
    def convert_optional(value: Any) -> Any:
        return None if value is None else convert(value)

    return convert_optional


def one_of(*choices: str | None) -> Converter:
    """A name from a fixed set (`merge_mode=concat`); Python users may give the same as a string."""

    def convert_choice(value: Any) -> Any:
        if value in choices:
            return value
        names = [c for c in choices if c is not None]
        raise ArgError(
            f"expected one of {', '.join(format_value(c) for c in choices)}, got {describe(value)}",
            hint=did_you_mean(value, names) if isinstance(value, str) else None,
        )

    return convert_choice


def int_list(value: Any) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise ArgError(f"expected a list of whole numbers like `[28, 28]`, got {describe(value)}")
    return tuple(integer(v) for v in value)


def seed(value: Any) -> int | None:
    return None if value is None else integer(value)


def float32_only(value: Any) -> str:
    if value in (None, "float32", "f32"):
        return "float32"
    raise ArgError(f"only float32 layers are supported, got {describe(value)}")
