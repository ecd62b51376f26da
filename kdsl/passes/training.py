"""The training program: forward pass, losses, regularizers and the gradient of every trainable weight."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kdsl.errors import KdslArgumentError
from kdsl.ir.graph import Graph, LossTerm
from kdsl.ir.program import Program, Var
from kdsl.passes.autodiff import backprop
from kdsl.passes.dce import dce
from kdsl.passes.losses import per_sample_loss, regularization, softmax_logits, target_type
from kdsl.passes.lower import Lowered, lower


@dataclass
class Training:
    """Program inputs: model inputs, targets, sample weights, parameters, dropout masks.

    Outputs: the total loss, the model outputs, the gradients of the trainable parameters
    (in parameter order) and the new values of the non-trainable statistics.
    """

    program: Program
    lowered: Lowered
    targets: list[Var]
    sample_weights: list[Var]  # one per output, shaped like its per-sample loss (ones: unweighted)
    trainable: list[int]  # parameter indices, in the order of the gradient outputs


def losses_per_output(graph: Graph, losses: dict[str | None, LossTerm] | None = None) -> list[LossTerm]:
    """One loss term per output, from a train block's (or compile's) `{output name or None: term}`."""
    losses = losses if losses is not None else (graph.train.losses if graph.train else None)
    if not losses:
        raise KdslArgumentError(f"model `{graph.name}` has no loss", hint="add a `train` block with `loss = ...`")
    if None in losses:
        return [losses[None]] * len(graph.outputs)
    missing = [name for name in graph.output_names if name not in losses]
    if missing:
        raise KdslArgumentError(f"no loss for output(s) {', '.join(missing)} of model `{graph.name}`")
    return [losses[name] for name in graph.output_names]


def build_training(graph: Graph, losses: Sequence[LossTerm]) -> Training:
    lowered = lower(graph, training=True)
    program = lowered.program
    b = _builder_over(program)
    outputs = list(lowered.outputs)
    targets, sample_weights, total = [], [], None
    for k, (term, output) in enumerate(zip(losses, lowered.outputs)):
        labels = b.var(target_type(term.loss, output.type), f"target_{graph.output_names[k]}", exact=True)
        targets.append(labels)
        per_sample, fused_probs = per_sample_loss(b, term.loss, labels, output, softmax_logits(program, output))
        if fused_probs is not None:
            outputs[k] = fused_probs
        weights = b.var(per_sample.type, f"sample_weight_{graph.output_names[k]}", exact=True)
        sample_weights.append(weights)
        everything = tuple(range(per_sample.rank))  # Keras's sum_over_batch_size: Σ w·loss / number of values
        summed = b.reduce_sum(b.mul(per_sample, weights), axes=everything)
        mean = b.div(summed, b.count(per_sample, axes=everything))
        weighted = b.mul(mean, term.weight) if term.weight != 1.0 else mean
        total = weighted if total is None else b.add(total, weighted)
    for _, spec, var in lowered.params:
        if spec.regularizer is not None and spec.trainable:
            total = b.add(total, regularization(b, spec.regularizer, var))
    trainable = [i for i, (_, spec, _) in enumerate(lowered.params) if spec.trainable]
    wrt = [lowered.params[i][2] for i in trainable]
    grads = backprop(b, b.eqns, {id(total): b.const(1.0)}, wrt)
    grads = [g if g is not None else b.broadcast_like(0.0, w) for g, w in zip(grads, wrt)]
    n_in = len(lowered.inputs)
    updates = [value for _, value in lowered.updates]
    training_program = Program(
        [*program.inputs[:n_in], *targets, *sample_weights, *program.inputs[n_in:]],
        [total, *outputs, *grads, *updates],
        b.eqns,
    )
    return Training(dce(training_program), lowered, targets, sample_weights, trainable)


def _builder_over(program: Program):
    """A builder that appends to `program`'s equations."""
    from kdsl.ir.program import Builder

    b = Builder()
    b.eqns = program.eqns
    return b
