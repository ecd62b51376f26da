"""What every layer of the catalogue defines: arguments, shape rule, parameters, masking."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from kdsl.catalogue.args import Arg, ArgError, Given, bind, boolean, float32_only, format_value
from kdsl.catalogue.functions import INITIALIZERS, REGULARIZERS
from kdsl.errors import KdslShapeError, Span
from kdsl.ir.graph import LayerSpec, ParamSpec
from kdsl.ir.types import BATCH, Dim, TensorType

Config = Mapping[str, Any]

COMMON_ARGS = (Arg("trainable", boolean, True), Arg("dtype", float32_only, "float32"))

CONSTRAINT_HINT = "weight constraints are not implemented; remove the argument"
ACTIVITY_HINT = "activity regularizers are not implemented; use `kernel_regularizer` instead"


class LayerKind:
    """A layer of the catalogue. Subclasses set the class attributes and override the rules."""

    name: ClassVar[str]  # as written in `.kd` files: `dense`, `batch_normalization`
    keras: ClassVar[str]  # the Keras class: `Dense`, `BatchNormalization`
    aliases: ClassVar[tuple[str, ...]] = ()
    args: ClassVar[tuple[Arg, ...]] = ()
    unsupported: ClassVar[Mapping[str, str]] = {}
    min_inputs: ClassVar[int] = 1
    max_inputs: ClassVar[int | None] = 1
    supports_masking: ClassVar[bool] = True  # passes an input mask on to its outputs

    def bind(self, given: Sequence[Given], span: Span | None = None) -> dict[str, Any]:
        return bind(self.name, (*self.args, *COMMON_ARGS), given, span=span, unsupported=self.unsupported)

    def defaults(self) -> dict[str, Any]:
        return {arg.name: arg.default for arg in (*self.args, *COMMON_ARGS)}

    def num_outputs(self, config: Config) -> int:
        return 1

    def output_types(self, config: Config, inputs: Sequence[TensorType]) -> list[TensorType]:
        raise NotImplementedError

    def params(self, config: Config, inputs: Sequence[TensorType]) -> list[ParamSpec]:
        return []

    def output_masks(self, config: Config, input_masks: Sequence[bool]) -> list[bool]:
        masked = self.supports_masking and any(input_masks)
        return [masked] * self.num_outputs(config)

    def __repr__(self) -> str:
        return f"<layer {self.name}>"


# --- helpers shared by the shape rules ----------------------------------------------------------


def show(t: TensorType) -> str:
    return t.keras_shape()


def expect_float(kind: LayerKind, t: TensorType) -> None:
    if t.dtype != "f32":
        raise KdslShapeError(
            f"`{kind.name}` expects f32 input, got {t}",
            hint="integer ids go through `embedding` first" if t.dtype == "i32" else None,
        )


def expect_rank(kind: LayerKind, t: TensorType, rank: int, meaning: str) -> None:
    if t.rank != rank:
        raise KdslShapeError(f"`{kind.name}` expects a rank-{rank} input {meaning}, got shape {show(t)}")


def expect_min_rank(kind: LayerKind, t: TensorType, rank: int) -> None:
    if t.rank < rank:
        raise KdslShapeError(f"`{kind.name}` expects an input of rank {rank} or more, got shape {show(t)}")


def fixed(kind: LayerKind, dim: Dim, what: str) -> int:
    """A dim the layer's weights depend on: it must be a number, not a symbol."""
    if not isinstance(dim, int):
        raise KdslShapeError(
            f"`{kind.name}` needs a fixed {what}, got `{dim}`",
            hint="its weights are sized by this dimension; declare it as a number in the model's inputs",
        )
    return dim


def normalize_axis(kind: LayerKind, axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise KdslShapeError(f"`{kind.name}`: axis {axis} is out of range for rank {rank}")
    axis %= rank
    if axis == 0:
        raise KdslShapeError(f"`{kind.name}`: axis 0 is the batch dimension", hint="use axis=-1 (the last one)")
    return axis


def with_batch(dims: Sequence[Dim]) -> tuple[Dim, ...]:
    return (BATCH, *dims)


def weight(
    name: str, shape: tuple[int, ...], config: Config, prefix: str | None = None, trainable: bool = True
) -> ParamSpec:
    """A parameter whose initializer and regularizer come from `<prefix>_initializer` / `_regularizer`."""
    prefix = prefix or name
    return ParamSpec(
        name,
        shape,
        trainable,
        config.get(f"{prefix}_initializer"),
        config.get(f"{prefix}_regularizer"),
    )


def initializer_arg(prefix: str, default: str) -> Arg:
    return Arg(f"{prefix}_initializer", INITIALIZERS, INITIALIZERS(default))


def regularizer_arg(prefix: str) -> Arg:
    return Arg(f"{prefix}_regularizer", REGULARIZERS.optional, None)


def layer_arg(accepts: tuple[str, ...] | None, what: str):
    """A converter for a layer given as an argument (`bidirectional(lstm(32))`)."""

    def convert_layer(value: Any) -> LayerSpec:
        spec = value.as_layer_spec() if hasattr(value, "as_layer_spec") else None
        if spec is None:
            raise ArgError(
                f"expected {what}, got `{format_value(value)}`", hint="write the layer as a call, e.g. `lstm(32)`"
            )
        if accepts is not None and spec.kind.name not in accepts:
            raise ArgError(f"expected {what}, got a `{spec.kind.name}` layer")
        return spec

    return convert_layer
