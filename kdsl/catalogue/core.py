"""Core layers: Dense, Activation, Flatten, Reshape, Dropout, RepeatVector, BatchNormalization, Embedding."""

from __future__ import annotations

import math
from collections.abc import Sequence

from kdsl.catalogue.args import (
    Arg,
    ArgError,
    boolean,
    int_list,
    integer,
    optional,
    positive,
    positive_int,
    rate,
    seed,
    unit_interval,
)
from kdsl.catalogue.base import (
    ACTIVITY_HINT,
    CONSTRAINT_HINT,
    LayerKind,
    expect_float,
    expect_min_rank,
    expect_rank,
    fixed,
    initializer_arg,
    normalize_axis,
    regularizer_arg,
    show,
    weight,
    with_batch,
)
from kdsl.catalogue.functions import activation
from kdsl.errors import KdslShapeError
from kdsl.ir.graph import ParamSpec
from kdsl.ir.types import TensorType, dim_product


class Dense(LayerKind):
    name, keras = "dense", "Dense"
    args = (
        Arg("units", positive_int, positional=True),
        Arg("activation", activation, "linear"),
        Arg("use_bias", boolean, True),
        initializer_arg("kernel", "glorot_uniform"),
        initializer_arg("bias", "zeros"),
        regularizer_arg("kernel"),
        regularizer_arg("bias"),
    )
    unsupported = {
        "kernel_constraint": CONSTRAINT_HINT,
        "bias_constraint": CONSTRAINT_HINT,
        "activity_regularizer": ACTIVITY_HINT,
        "lora_rank": "LoRA adapters are not implemented",
    }

    def output_types(self, config, inputs):
        (x,) = inputs
        expect_float(self, x)
        expect_min_rank(self, x, 2)
        fixed(self, x.dims[-1], "last input dimension")
        return [x.with_dims((*x.dims[:-1], config["units"]))]

    def params(self, config, inputs):
        features, units = inputs[0].dims[-1], config["units"]
        kernel = weight("kernel", (features, units), config)
        return [kernel, weight("bias", (units,), config)] if config["use_bias"] else [kernel]


class Activation(LayerKind):
    name, keras = "activation", "Activation"
    args = (Arg("activation", activation, positional=True),)

    def output_types(self, config, inputs):
        (x,) = inputs
        expect_float(self, x)
        return [x]


def _channels_last(value: object) -> str:
    if value != "channels_last":
        raise ArgError("only `channels_last` is supported")
    return value


class Flatten(LayerKind):
    name, keras = "flatten", "Flatten"
    args = (Arg("data_format", optional(_channels_last), None),)
    supports_masking = False

    def output_types(self, config, inputs):
        (x,) = inputs
        expect_min_rank(self, x, 1)
        return [x.with_dims(with_batch([dim_product(x.dims[1:]) if x.rank > 1 else 1]))]


class Reshape(LayerKind):
    name, keras = "reshape", "Reshape"
    args = (Arg("target_shape", int_list, positional=True),)
    supports_masking = False

    def output_types(self, config, inputs):
        (x,) = inputs
        target = list(config["target_shape"])
        if sum(d == -1 for d in target) > 1 or any(d == 0 or d < -1 for d in target):
            raise KdslShapeError(
                f"`reshape`: bad target shape {tuple(target)}", hint="use positive sizes and at most one -1"
            )
        size = dim_product(x.dims[1:])
        if not isinstance(size, int):
            raise KdslShapeError(f"`reshape` needs fixed input dimensions, got shape {show(x)}")
        known = math.prod(d for d in target if d != -1)
        if -1 in target:
            if size % known:
                raise KdslShapeError(f"`reshape` cannot fit {size} elements of shape {show(x)} into {tuple(target)}")
            target[target.index(-1)] = size // known
        elif known != size:
            raise KdslShapeError(
                f"`reshape` cannot turn shape {show(x)} ({size} elements per sample) into {tuple(target)} "
                f"({known} elements)"
            )
        return [x.with_dims(with_batch(target))]


class Dropout(LayerKind):
    name, keras = "dropout", "Dropout"
    args = (Arg("rate", rate, positional=True), Arg("seed", seed, None))
    unsupported = {"noise_shape": "dropout masks are drawn per element; `noise_shape` is not implemented"}

    def output_types(self, config, inputs):
        return [inputs[0]]


class RepeatVector(LayerKind):
    name, keras = "repeat_vector", "RepeatVector"
    args = (Arg("n", positive_int, positional=True),)
    supports_masking = False

    def output_types(self, config, inputs):
        (x,) = inputs
        expect_rank(self, x, 2, "(batch, features)")
        return [x.with_dims((x.dims[0], config["n"], x.dims[1]))]


class BatchNormalization(LayerKind):
    name, keras = "batch_normalization", "BatchNormalization"
    aliases = ("batch_norm",)
    args = (
        Arg("axis", integer, -1),
        Arg("momentum", unit_interval, 0.99),
        Arg("epsilon", positive, 1e-3),
        Arg("center", boolean, True),
        Arg("scale", boolean, True),
        initializer_arg("beta", "zeros"),
        initializer_arg("gamma", "ones"),
        initializer_arg("moving_mean", "zeros"),
        initializer_arg("moving_variance", "ones"),
        regularizer_arg("beta"),
        regularizer_arg("gamma"),
        # statistics of the global batch, summed across the replicas of a distribution strategy (Keras's rule,
        # E(x²) - E(x)², on one replica too)
        Arg("synchronized", boolean, False),
    )
    unsupported = {
        "beta_constraint": CONSTRAINT_HINT,
        "gamma_constraint": CONSTRAINT_HINT,
        "renorm": "batch renormalization is not implemented",
        "virtual_batch_size": "ghost batch normalization is not implemented",
    }

    def output_types(self, config, inputs):
        (x,) = inputs
        expect_float(self, x)
        expect_min_rank(self, x, 2)
        axis = normalize_axis(self, config["axis"], x.rank)
        fixed(self, x.dims[axis], f"size along axis {config['axis']}")
        return [x]

    def params(self, config, inputs) -> list[ParamSpec]:
        x = inputs[0]
        shape = (x.dims[normalize_axis(self, config["axis"], x.rank)],)
        params = []
        if config["scale"]:
            params.append(weight("gamma", shape, config))
        if config["center"]:
            params.append(weight("beta", shape, config))
        params.append(weight("moving_mean", shape, config, trainable=False))
        params.append(weight("moving_variance", shape, config, trainable=False))
        return params


class Embedding(LayerKind):
    name, keras = "embedding", "Embedding"
    args = (
        Arg("input_dim", positive_int, positional=True),
        Arg("output_dim", positive_int, positional=True),
        initializer_arg("embeddings", "uniform"),
        regularizer_arg("embeddings"),
        Arg("mask_zero", boolean, False),
        Arg("input_length", optional(positive_int), None),
    )
    unsupported = {
        "embeddings_constraint": CONSTRAINT_HINT,
        "activity_regularizer": ACTIVITY_HINT,
        "sparse": "gradients of embeddings are dense here",
        "lora_rank": "LoRA adapters are not implemented",
    }

    def output_types(self, config, inputs):
        (ids,) = inputs
        if ids.dtype != "i32":
            raise KdslShapeError(
                f"`embedding` expects i32 token ids, got {ids}", hint="declare the input as i32[batch, ...]"
            )
        length = config["input_length"]
        if length is not None and (ids.rank != 2 or ids.dims[1] != length):
            raise KdslShapeError(f"`embedding` has input_length={length} but its input has shape {show(ids)}")
        return [TensorType("f32", (*ids.dims, config["output_dim"]))]

    def params(self, config, inputs):
        return [weight("embeddings", (config["input_dim"], config["output_dim"]), config)]

    def output_masks(self, config, input_masks: Sequence[bool]) -> list[bool]:
        return [config["mask_zero"]]
