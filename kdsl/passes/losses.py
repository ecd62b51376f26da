"""Losses and weight regularizers in primitive ops, with Keras's definitions.

Each loss gives one value per sample (averaged over the last axis where Keras does); the
training program averages it over the batch, as Keras's `sum_over_batch_size` does.
Crossentropy on probabilities clips them to [1e-7, 1 - 1e-7] as Keras does — except when
they come straight from a softmax: then softmax and crossentropy fuse into one op whose
gradient is exactly `probs - labels` (see `fuse_softmax_cross_entropy`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kdsl.catalogue.args import FnSpec
from kdsl.errors import KdslUnsupportedError
from kdsl.ir.builder import Builder
from kdsl.ir.graph import LossTerm, ParamSpec
from kdsl.ir.ops.reduce import Softmax
from kdsl.ir.program import Program, Var
from kdsl.ir.types import TensorType

EPSILON = 1e-7


def target_type(loss: FnSpec, output: TensorType) -> TensorType:
    """What the labels of an output look like: class ids for the sparse crossentropy, else the output's shape."""
    if loss.name == "sparse_categorical_crossentropy":
        return TensorType("i32", output.dims[:-1])
    return TensorType("f32", output.dims)


def _per_last(b: Builder, value: float, x: Var) -> float | Var:
    """`value` divided by the size of `x`'s last axis, counted at run time when that dim is symbolic."""
    last = x.shape[-1]
    return value / last if isinstance(last, int) else b.div(value, b.count(x, axes=(x.rank - 1,)))


def _mean_last(b: Builder, x: Var) -> Var:
    return b.mul(b.reduce_sum(x, axes=(x.rank - 1,)), _per_last(b, 1.0, x))


def _normalized_log(b: Builder, p: Var) -> Var:
    """log of probabilities renormalized over the last axis and clipped, as Keras's crossentropy takes them."""
    p = b.div(p, b.reduce_sum(p, axes=(p.rank - 1,), keepdims=True))
    return b.log(b.clip(p, lo=EPSILON, hi=1.0 - EPSILON))


def per_sample_loss(
    b: Builder, loss: FnSpec, labels: Var, predicted: Var, softmax_logits: Var | None
) -> tuple[Var, Var | None]:
    """The loss of each sample, and the probabilities if softmax and crossentropy were fused.

    `softmax_logits` are the logits when `predicted` is their softmax.
    """
    args, name = loss.args, loss.name
    if name in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
        sparse = name.startswith("sparse")
        if not sparse and args.get("label_smoothing", 0.0):
            smoothing = args["label_smoothing"]
            labels = b.add(b.mul(labels, 1.0 - smoothing), _per_last(b, smoothing, predicted))
        logits = predicted if args.get("from_logits") else softmax_logits
        if logits is not None:
            probs, loss_value = b.softmax_cross_entropy(logits, labels, sparse=sparse)
            return loss_value, None if args.get("from_logits") else probs
        target = b.one_hot(labels, predicted) if sparse else labels
        log_p = _normalized_log(b, predicted)
        return b.neg(b.reduce_sum(b.mul(target, log_p), axes=(predicted.rank - 1,))), None
    if name == "binary_crossentropy":
        smoothing = args.get("label_smoothing", 0.0)
        if smoothing:
            labels = b.add(b.mul(labels, 1.0 - smoothing), 0.5 * smoothing)
        if args.get("from_logits"):  # max(x, 0) - x·y + log(1 + exp(-|x|))
            x = predicted
            elementwise = b.add(b.sub(b.relu(x), b.mul(x, labels)), b.softplus(b.neg(b.abs(x))))
        else:
            p = b.clip(predicted, lo=EPSILON, hi=1.0 - EPSILON)
            elementwise = b.neg(b.add(b.mul(labels, b.log(p)), b.mul(b.sub(1.0, labels), b.log(b.sub(1.0, p)))))
        return _mean_last(b, elementwise), None
    if name == "mean_squared_error":
        return _mean_last(b, b.square(b.sub(labels, predicted))), None
    if name == "mean_absolute_error":
        return _mean_last(b, b.abs(b.sub(labels, predicted))), None
    raise NotImplementedError(f"loss `{name}`")


def regularization(b: Builder, spec: FnSpec, weight: Var) -> Var:
    """Keras's l1 / l2 / l1_l2 penalties: l1·Σ|w| + l2·Σw²."""
    l1 = spec.args.get("l1", 0.0) if spec.name != "l2" else 0.0
    l2 = spec.args.get("l2", 0.0) if spec.name != "l1" else 0.0
    everything = tuple(range(weight.rank))
    terms = []
    if l1:
        terms.append(b.mul(b.reduce_sum(b.abs(weight), axes=everything), l1))
    if l2:
        terms.append(b.mul(b.reduce_sum(b.square(weight), axes=everything), l2))
    return terms[0] if len(terms) == 1 else b.add(*terms) if terms else b.const(0.0)


def softmax_logits(program: Program, output: Var) -> Var | None:
    """The logits, when `output` is computed by a softmax in `program`."""
    maker = program.producers().get(id(output))
    return maker.inputs[0] if maker is not None and isinstance(maker.op, Softmax) else None


@dataclass
class Loss:
    total: Var
    targets: list[Var]  # one per output
    sample_weights: list[Var]  # one per output, shaped like its per-sample loss; empty when unweighted
    probs: list[Var | None]  # per output: the probabilities a fused softmax-crossentropy computed
    per_output: list[Var]  # each output's loss before its loss weight, as Keras logs `<output>_loss`


def _masked(b: Builder, weights: Var | None, mask: Var, per_sample: Var, name: str) -> Var:
    """Sample weights with an output's mask merged in as Keras's `apply_mask` merges it for sum_over_batch_size:
    each unmasked value weighs total/valid, a masked one 0, so the mean over all values is the weighted mean over
    the valid ones (and 0 when none is valid)."""
    if mask.shape != per_sample.shape:
        raise KdslUnsupportedError(
            f"output `{name}` carries a mask of shape {mask.type} but its loss has one value per {per_sample.type}",
            hint="a masked output takes a loss with one value per timestep, such as a crossentropy over its classes",
        )
    everything = tuple(range(mask.rank))
    valid = b.reduce_sum(mask, axes=everything)
    total = b.count(mask, axes=everything)
    float_mask = b.mul(mask, b.div(total, b.maximum(valid, 1.0)))  # valid is a count: 0 only if every weight is 0
    return float_mask if weights is None else b.mul(weights, float_mask)


def total_loss(
    b: Builder,
    terms: Sequence[LossTerm],
    names: Sequence[str],
    outputs: Sequence[Var],
    params: Sequence[tuple[ParamSpec, Var]],
    logits_of: Callable[[Var], Var | None] = lambda output: None,
    weighted: bool = True,
    masks: Sequence[Var | None] = (),
) -> Loss:
    """Σ over outputs of weight · Keras's sum_over_batch_size (Σ w·loss / number of values), plus the
    regularizers of trainable weights. `logits_of(output)` gives the logits of a softmax output, to fuse;
    `masks` the padding mask of each output that has one, which weighs its timesteps as Keras's does."""
    targets, sample_weights, probs, per_output, total = [], [], [], [], None
    masks = list(masks) or [None] * len(outputs)
    for term, name, output, mask in zip(terms, names, outputs, masks, strict=True):
        labels = b.var(target_type(term.loss, output.type), f"target_{name}", exact=True)
        targets.append(labels)
        per_sample, fused = per_sample_loss(b, term.loss, labels, output, logits_of(output))
        probs.append(fused)
        weights = None
        if weighted:
            weights = b.var(per_sample.type, f"sample_weight_{name}", exact=True)
            sample_weights.append(weights)
        if mask is not None:
            weights = _masked(b, weights, mask, per_sample, name)
        per_sample_weighted = per_sample if weights is None else b.mul(per_sample, weights)
        everything = tuple(range(per_sample.rank))
        summed = b.reduce_sum(per_sample_weighted, axes=everything)
        mean = b.div(summed, b.count(per_sample, axes=everything))
        per_output.append(mean)
        scaled = b.mul(mean, term.weight) if term.weight != 1.0 else mean
        total = scaled if total is None else b.add(total, scaled)
    for spec, var in params:
        if spec.regularizer is not None and spec.trainable:
            total = b.add(total, regularization(b, spec.regularizer, var))
    return Loss(total, targets, sample_weights, probs, per_output)
