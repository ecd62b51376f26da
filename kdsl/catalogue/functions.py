"""Functions a model names: activations, initializers, regularizers, losses, optimizers, metrics.

Names, aliases, arguments and defaults follow Keras 3, so `kernel_regularizer=l2(0.01)`
or `optimizer = adam(learning_rate=1e-3)` mean what a Keras user expects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kdsl.catalogue.args import (
    Arg,
    ArgError,
    FnSpec,
    Given,
    bind,
    boolean,
    describe,
    format_value,
    non_negative,
    number,
    one_of,
    optional,
    positive,
    seed,
    unit_interval,
)
from kdsl.errors import KdslArgumentError, KdslError, Span, did_you_mean
from kdsl.ir.ops.elementwise import ACTIVATION_FNS


@dataclass(frozen=True)
class RawCall:
    """`name(args...)` written in an argument position, bound once we know which table it belongs to."""

    name: str
    given: Sequence[Given]
    span: Span | None = None


@dataclass(frozen=True)
class FunctionTable:
    kind: str  # "initializer", "loss", ... for messages
    schemas: Mapping[str, Sequence[Arg]]
    aliases: Mapping[str, str] = field(default_factory=dict)
    unsupported: Mapping[str, str] = field(default_factory=dict)  # argument -> hint, for every entry

    def names(self) -> list[str]:
        return [*self.schemas, *self.aliases]

    def canonical(self, name: str) -> str:
        name = self.aliases.get(name, name)
        if name not in self.schemas:
            raise ArgError(
                f"unknown {self.kind} {describe(name)}",
                hint=did_you_mean(name, self.names()) or f"known: {', '.join(self.schemas)}",
            )
        return name

    def spec(self, value: Any) -> FnSpec:
        """A name, a `RawCall` from `.kd` text or an `FnSpec` from Python, bound and checked."""
        if isinstance(value, str):
            name, given, span = self.canonical(value), [], None
        elif isinstance(value, RawCall):
            name, given, span = self.canonical(value.name), value.given, value.span
        elif isinstance(value, FnSpec):
            name, span = self.canonical(value.name), None
            given = [Given(v, None, k) for k, v in value.args.items()]
        else:
            example = describe(next(iter(self.schemas)))
            raise ArgError(f"expected {_article(self.kind)} {self.kind} like {example}, got {describe(value)}")
        try:
            return FnSpec(name, bind(name, self.schemas[name], given, span=span, unsupported=self.unsupported))
        except KdslError as error:
            if span is None:
                raise ArgError(error.message, error.hint) from None
            raise

    def __call__(self, value: Any) -> FnSpec:
        return self.spec(value)

    def checked(self, value: Any) -> FnSpec:
        """`spec` for Python callers: a bad value raises `KdslArgumentError` with its hint."""
        try:
            return self.spec(value)
        except ArgError as error:
            raise KdslArgumentError(error.message, hint=error.hint) from None

    def optional(self, value: Any) -> FnSpec | None:
        return None if value is None else self.spec(value)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


# --- activations: named without arguments, as in `activation=relu` -----------------------------

ACTIVATIONS = ("linear", *ACTIVATION_FNS, "softmax", "log_softmax")  # each elementwise one is an op of the IR
ACTIVATION_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}


def activation(value: Any) -> str:
    """An activation name; `none` means linear, as in Keras."""
    if value is None:
        return "linear"
    if isinstance(value, str):
        name = ACTIVATION_ALIASES.get(value, value)
        if name in ACTIVATIONS:
            return name
        raise ArgError(
            f"unknown activation {describe(value)}",
            hint=did_you_mean(value, [*ACTIVATIONS, *ACTIVATION_ALIASES]) or f"known: {', '.join(ACTIVATIONS)}",
        )
    raise ArgError(f"expected an activation name like `relu`, got {describe(value)}")


# --- initializers -------------------------------------------------------------------------------

_SEED = Arg("seed", seed, None)
_GAIN = Arg("gain", number, 1.0, positional=True)

INITIALIZERS = FunctionTable(
    "initializer",
    {
        "zeros": (),
        "ones": (),
        "constant": (Arg("value", number, 0.0, positional=True),),
        "random_normal": (Arg("mean", number, 0.0), Arg("stddev", positive, 0.05), _SEED),
        "random_uniform": (Arg("minval", number, -0.05), Arg("maxval", number, 0.05), _SEED),
        "truncated_normal": (Arg("mean", number, 0.0), Arg("stddev", positive, 0.05), _SEED),
        "glorot_uniform": (_SEED,),
        "glorot_normal": (_SEED,),
        "he_uniform": (_SEED,),
        "he_normal": (_SEED,),
        "lecun_uniform": (_SEED,),
        "lecun_normal": (_SEED,),
        "orthogonal": (_GAIN, _SEED),
        "identity": (_GAIN,),
        "variance_scaling": (
            Arg("scale", positive, 1.0),
            Arg("mode", one_of("fan_in", "fan_out", "fan_avg"), "fan_in"),
            Arg("distribution", one_of("truncated_normal", "untruncated_normal", "uniform"), "truncated_normal"),
            _SEED,
        ),
    },
    aliases={"uniform": "random_uniform", "normal": "random_normal", "zero": "zeros", "one": "ones"},
)

# --- regularizers -------------------------------------------------------------------------------

REGULARIZERS = FunctionTable(
    "regularizer",
    {
        "l1": (Arg("l1", non_negative, 0.01, positional=True),),
        "l2": (Arg("l2", non_negative, 0.01, positional=True),),
        "l1_l2": (Arg("l1", non_negative, 0.0, positional=True), Arg("l2", non_negative, 0.0, positional=True)),
    },
    aliases={"l1l2": "l1_l2"},
)

# --- losses -------------------------------------------------------------------------------------

_FROM_LOGITS = Arg("from_logits", boolean, False)
_SMOOTHING = Arg("label_smoothing", unit_interval, 0.0)

LOSSES = FunctionTable(
    "loss",
    {
        "mean_squared_error": (),
        "mean_absolute_error": (),
        "binary_crossentropy": (_FROM_LOGITS, _SMOOTHING),
        "categorical_crossentropy": (_FROM_LOGITS, _SMOOTHING),
        "sparse_categorical_crossentropy": (_FROM_LOGITS,),
    },
    aliases={"mse": "mean_squared_error", "mae": "mean_absolute_error"},
)

# --- optimizers ---------------------------------------------------------------------------------

_CLIPPING = (
    Arg("clipnorm", optional(positive), None),
    Arg("clipvalue", optional(positive), None),
    Arg("global_clipnorm", optional(positive), None),
)


def _learning_rate(default: float) -> Arg:
    return Arg("learning_rate", positive, default, positional=True)


OPTIMIZERS = FunctionTable(
    "optimizer",
    {
        "sgd": (_learning_rate(0.01), Arg("momentum", non_negative, 0.0), Arg("nesterov", boolean, False), *_CLIPPING),
        "adam": (
            _learning_rate(0.001),
            Arg("beta_1", unit_interval, 0.9),
            Arg("beta_2", unit_interval, 0.999),
            Arg("epsilon", positive, 1e-7),
            Arg("amsgrad", boolean, False),
            *_CLIPPING,
        ),
        "rmsprop": (
            _learning_rate(0.001),
            Arg("rho", unit_interval, 0.9),
            Arg("momentum", non_negative, 0.0),
            Arg("epsilon", positive, 1e-7),
            Arg("centered", boolean, False),
            *_CLIPPING,
        ),
        "adagrad": (
            _learning_rate(0.001),
            Arg("initial_accumulator_value", non_negative, 0.1),
            Arg("epsilon", positive, 1e-7),
            *_CLIPPING,
        ),
    },
    unsupported={
        "lr": "Keras 3 names it `learning_rate`",
        "decay": "Keras 3 ignores it; for a decaying rate give `learning_rate` a schedule, such as ExponentialDecay",
        "weight_decay": "add a `kernel_regularizer=l2(...)` to the layers instead",
        "use_ema": "exponential moving averages of weights are not implemented",
        "ema_momentum": "exponential moving averages of weights are not implemented",
        "ema_overwrite_frequency": "exponential moving averages of weights are not implemented",
        "loss_scale_factor": "kdsl trains in float32; no loss scaling is needed",
        "gradient_accumulation_steps": "gradient accumulation is not implemented; use a larger batch_size",
    },
)

# --- metrics ------------------------------------------------------------------------------------

METRICS = FunctionTable(
    "metric",
    {
        "accuracy": (),
        "binary_accuracy": (),
        "categorical_accuracy": (),
        "sparse_categorical_accuracy": (),
        "mean_squared_error": (),
        "mean_absolute_error": (),
    },
    aliases={"acc": "accuracy", "mse": "mean_squared_error", "mae": "mean_absolute_error"},
)


TABLES = (INITIALIZERS, REGULARIZERS, LOSSES, OPTIMIZERS, METRICS)


def format_spec(spec: FnSpec) -> str:
    """`.kd` text for a bound function: its name, and in parentheses only the arguments that differ from defaults."""
    schema = next((table.schemas[spec.name] for table in TABLES if spec.name in table.schemas), ())
    defaults = {arg.name: arg.default for arg in schema}
    changed = {k: v for k, v in spec.args.items() if k not in defaults or defaults[k] != v}
    if not changed:
        return spec.name
    return spec.name + "(" + ", ".join(f"{k}={format_value(v)}" for k, v in changed.items()) + ")"
