"""Lowering of `rnn` over a `StepCell`: the step graph's layers, lowered by their own rules into the loop's body.

The sequence is the loop's time-major input, the states its carries and the cell's weights its constants; masks,
initial states, `go_backwards` and Bidirectional go through the same loop as the built-in recurrent layers'.
"""

from __future__ import annotations

from kdsl.catalogue.cells import StepCell, weight_name
from kdsl.ir.builder import Builder
from kdsl.ir.program import Var
from kdsl.passes.layer_rules import RULES, LayerContext, rule
from kdsl.passes.lower_recurrent import LOOPS, Run, recurrent, run_steps


def run_cell(
    ctx: LayerContext,
    config: dict,
    params: dict[str, Var],
    inputs: list[Var],
    mask: Var | None,
    go_backwards: bool,
    zero_output: bool,
) -> Run:
    """The cell's loop; `params` are the `rnn` layer's weights (the cell's layers', under their names), which the
    loop reads as constants."""
    cell: StepCell = config["cell"]
    x, *initial = inputs

    def step(bb: Builder, xs: list[Var], consts: dict[str, Var], states: list[Var]) -> tuple[Var, list[Var]]:
        env = {id(value): var for value, var in zip(cell.graph.inputs, [*xs, *states])}
        for node in cell.graph.nodes:
            layer = node.layer
            own = {p.name: consts[weight_name(layer, p)] for p in layer.params or []}
            inner = LayerContext(bb, layer, own, ctx.training, ctx.lowering)
            values = [env[id(value)] for value in node.inputs]
            types = [value.type for value in node.outputs]
            outputs = RULES[layer.kind.name](inner, layer.config, values, [None] * len(values), types)
            env.update((id(value), var) for value, var in zip(node.outputs, outputs))
        output, *new = (env[id(value)] for value in cell.graph.outputs)
        return output, new

    output, *new_states = cell.graph.outputs
    widths = [width for _, width in cell.states]
    sequence = ctx.b.transpose(x, perm=(1, 0, 2))
    output_width = output.type.dims[1]
    output_is_state = output is new_states[0]
    carried = ctx.take_carried(len(widths))  # a stateful layer's: given initial states still update them
    run = run_steps(
        ctx.b, step, x, initial or carried, widths, output_width, [sequence], params, mask, go_backwards,
        zero_output, output_is_state,
    )  # fmt: skip
    if carried:
        ctx.carry(carried, run.states)
    return run


@rule("weight")
def cell_weight(ctx, config, inputs, masks, types):
    """A weight the cell holds itself: the loop's constant."""
    return [ctx.param("value")]


LOOPS["rnn"] = run_cell
rule("rnn")(recurrent)
