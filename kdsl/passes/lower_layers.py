"""Lowering rules of the non-recurrent layers, each the Keras equations in primitive ops."""

from __future__ import annotations

from kdsl.catalogue.base import normalize_axis
from kdsl.catalogue.operations import OPERATIONS
from kdsl.errors import KdslUnsupportedError
from kdsl.passes.layer_rules import RULES, activate, broadcast_to_axis, rule, sum_all


@rule("dense")
def dense(ctx, config, inputs, masks, types):
    (x,) = inputs
    y = ctx.b.matmul(x, ctx.param("kernel"))
    if config["use_bias"]:
        y = ctx.b.add(y, ctx.param("bias"))
    return [activate(ctx.b, config["activation"], y)]


@rule("activation")
def activation(ctx, config, inputs, masks, types):
    return [activate(ctx.b, config["activation"], inputs[0])]


@rule("flatten", "reshape")
def reshape(ctx, config, inputs, masks, types):
    return [ctx.b.reshape(inputs[0], shape=types[0].dims)]


@rule("dropout")
def dropout(ctx, config, inputs, masks, types):
    (x,) = inputs
    if not ctx.training or config["rate"] == 0:
        return [x]
    return [ctx.b.mul(x, ctx.noise(x.type, config["rate"], config["seed"]))]


@rule("repeat_vector")
def repeat_vector(ctx, config, inputs, masks, types):
    return [ctx.b.repeat(inputs[0], n=config["n"])]


@rule("embedding")
def embedding(ctx, config, inputs, masks, types):
    (ids,) = inputs
    if config["mask_zero"]:
        ctx.set_mask(ctx.b.not_equal(ids, value=0))
    return [ctx.b.gather(ctx.param("embeddings"), ids)]


@rule("batch_normalization")
def batch_normalization(ctx, config, inputs, masks, types):
    """Batch statistics (biased variance) when training, moving statistics otherwise, as Keras. A layer that is not
    trainable runs as in inference even in training, as Keras's does (a wrapper made with `trainable=false` freezes
    the weights of the layer inside, which itself stays trainable: in Keras only setting `trainable` propagates)."""
    b, (x,) = ctx.b, inputs
    axis = normalize_axis(ctx.layer.kind, config["axis"], x.rank)
    shaped = {name: broadcast_to_axis(b, v, axis, x.rank) for name, v in ctx.params.items()}
    if ctx.training and config["trainable"]:
        axes = tuple(a for a in range(x.rank) if a != axis)
        mean, variance = (_replica_moments if config["synchronized"] else _moments)(b, x, axes)
        centred = b.sub(x, mean)
        momentum = config["momentum"]
        for name, batch_value in (("moving_mean", mean), ("moving_variance", variance)):
            flat = b.reshape_like(batch_value, ctx.params[name])
            ctx.update(name, b.add(b.mul(ctx.params[name], momentum), b.mul(flat, 1.0 - momentum)))
    else:
        centred, variance = b.sub(x, shaped["moving_mean"]), shaped["moving_variance"]
    y = b.mul(centred, b.rsqrt(b.add(variance, config["epsilon"])))
    if config["scale"]:
        y = b.mul(y, shaped["gamma"])
    if config["center"]:
        y = b.add(y, shaped["beta"])
    return [y]


def _moments(b, x, axes):
    """The batch's mean and (biased) variance, in two passes."""
    n = b.count(x, axes=axes)
    mean = b.div(b.reduce_sum(x, axes=axes, keepdims=True), n)
    variance = b.div(b.reduce_sum(b.square(b.sub(x, mean)), axes=axes, keepdims=True), n)
    return mean, variance


def _replica_moments(b, x, axes):
    """The global batch's mean and variance, from the sums of x and x² and the counts of every replica's shard:
    Keras's synchronized moments, E(x²) - E(x)² (at least 0)."""
    n = b.replica_sum(b.count(x, axes=axes))
    mean = b.div(b.replica_sum(b.reduce_sum(x, axes=axes, keepdims=True)), n)
    squares = b.div(b.replica_sum(b.reduce_sum(b.square(x), axes=axes, keepdims=True)), n)
    return mean, b.maximum(b.sub(squares, b.square(mean)), 0.0)


@rule("concatenate")
def concatenate(ctx, config, inputs, masks, types):
    """Keras's merged mask: unmasked inputs count as all true; along time the masks are joined, else OR-ed."""
    b, axis = ctx.b, config["axis"] % inputs[0].rank
    if any(m is not None for m in masks):
        full = [m if m is not None else b.fill(x, value=1.0, lead=2, tail=()) for m, x in zip(masks, inputs)]
        ctx.set_mask(b.concat(*full, axis=1) if axis == 1 else sum_all(b, full, "maximum"))
    return [b.concat(*inputs, axis=axis)]


@rule("add", "multiply")
def merge(ctx, config, inputs, masks, types):
    """Keras's merged mask: the OR of the inputs' masks, or none if any input has none."""
    if any(m is not None for m in masks):
        ctx.set_mask(sum_all(ctx.b, masks, "maximum") if all(m is not None for m in masks) else None)
    return [sum_all(ctx.b, inputs, "add" if ctx.layer.kind.name == "add" else "mul")]


@rule(*(op.name for op in OPERATIONS.values()))
def operation(ctx, config, inputs, masks, types):
    """A `keras.ops` function: its IR op on the tensors and the constants, in the order they were written."""
    kind = ctx.layer.kind
    return [getattr(ctx.b, kind.op)(*kind.operands(config, inputs))]


@rule("time_distributed")
def time_distributed(ctx, config, inputs, masks, types):
    """The inner layer's equations hold for any leading axes, so it runs on all timesteps at once."""
    inner = config["layer"]
    if inner.kind.name in ("simple_rnn", "lstm", "gru", "stacked_rnn", "bidirectional"):
        raise KdslUnsupportedError(
            f"`time_distributed({inner.kind.name})` is not supported",
            ctx.layer.span,
            hint="reshape the input so the recurrent layer sees (batch, timesteps, features)",
        )
    inner_config = dict(inner.config)
    if inner.kind.name == "batch_normalization" and inner_config["axis"] >= 0:
        inner_config["axis"] += 1  # the inner layer's axes count from its per-step input
    return RULES[inner.kind.name](ctx, inner_config, inputs, masks, types)
