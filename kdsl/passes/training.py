"""The training program: forward pass, losses, regularizers and the gradient of every trainable weight."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kdsl.errors import KdslArgumentError
from kdsl.ir.builder import Builder
from kdsl.ir.graph import Graph, LossTerm
from kdsl.ir.program import Program, Var
from kdsl.passes.autodiff import backprop
from kdsl.passes.losses import softmax_logits, total_loss
from kdsl.passes.lower import Lowered


@dataclass
class Training:
    """Program inputs: model inputs, targets, sample weights, parameters, dropout masks.

    Outputs: the total loss, the model outputs, the gradients of the trainable parameters
    (in parameter order), the new values of the non-trainable statistics, the masks of the
    outputs that have one and, with several outputs, each one's loss before its loss weight.
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


def add_training(lowered: Lowered, graph: Graph, losses: Sequence[LossTerm]) -> Training:
    """The training program of a model lowered for training: its losses and the gradient of every trainable
    weight, by reverse-mode autodiff."""
    program = lowered.program
    b = Builder(eqns=program.eqns)
    params = [(spec, var) for _, spec, var in lowered.params]
    logits_of = lambda out: softmax_logits(program, out)  # noqa: E731
    loss = total_loss(b, losses, graph.output_names, lowered.outputs, params, logits_of, masks=lowered.masks)
    outputs = [probs or output for probs, output in zip(loss.probs, lowered.outputs)]
    total, targets, sample_weights = loss.total, loss.targets, loss.sample_weights
    trainable = [i for i, (_, spec, _) in enumerate(lowered.params) if spec.trainable]
    wrt = [lowered.params[i][2] for i in trainable]
    grads = backprop(b, b.eqns, {id(total): b.const(1.0)}, wrt)
    grads = [g if g is not None else b.broadcast_like(0.0, w) for g, w in zip(grads, wrt)]
    n_in = len(lowered.inputs)
    updates = [value for _, value in lowered.updates]
    masks = [m for m in lowered.masks if m is not None]
    output_losses = loss.per_output if len(outputs) > 1 else []
    training_program = Program(
        [*program.inputs[:n_in], *targets, *sample_weights, *program.inputs[n_in:]],
        [total, *outputs, *grads, *updates, *masks, *output_losses],
        b.eqns,
    )
    return Training(training_program, lowered, targets, sample_weights, trainable)
