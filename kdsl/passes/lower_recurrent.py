"""Lowering of SimpleRNN, LSTM, GRU, stacked cells (`stacked_rnn`) and Bidirectional to a `scan` over their cell.

The input projection x·W + b of every timestep is one matmul before the scan (time-major,
so step t reads a contiguous slice); only h·U and the gate math stay in the loop. A
masked step keeps the previous state: state = h + m·(h_new - h), m the step's 0/1 mask.
`run_steps` is that loop for any cell, `rnn`'s over cells of the user's own included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kdsl.catalogue.stacked import cell_prefix
from kdsl.ir.builder import Builder
from kdsl.ir.program import Program, Var
from kdsl.passes.layer_rules import activate, rule


@dataclass
class Cell:
    """The per-step inputs of a recurrent cell, inside the scan body."""

    b: Builder
    config: dict
    projected: Var  # x_t·W, (batch, gates·units); the input bias is among `weights`
    weights: dict[str, Var]  # recurrent_kernel (or its split parts), recurrent bias, dropout mask

    def recurrent(self, h: Var, kernel: str = "recurrent_kernel") -> Var:
        """h·U (with the recurrent dropout mask applied to h first, as Keras does)."""
        if "recurrent_keep" in self.weights:
            h = self.b.mul(h, self.weights["recurrent_keep"])
        return self.b.matmul(h, self.weights[kernel])

    def act(self, x: Var) -> Var:
        return activate(self.b, self.config["activation"], x)

    def gate(self, x: Var) -> Var:
        return activate(self.b, self.config["recurrent_activation"], x)

    def gates(self, x: Var, n: int) -> list[Var]:
        units = self.config["units"]
        return self.b.split(x, sizes=(units,) * n, axis=x.rank - 1)

    def projections(self, n: int) -> list[Var]:
        """x_t·W + b, one piece per gate."""
        pieces = self.gates(self.projected, n)
        if "input_bias" in self.weights:
            pieces = [self.b.add(p, bias) for p, bias in zip(pieces, self.gates(self.weights["input_bias"], n))]
        return pieces


def simple_rnn_cell(c: Cell, h: Var) -> list[Var]:
    (projected,) = c.projections(1)
    return [c.act(c.b.add(projected, c.recurrent(h)))]


def lstm_cell(c: Cell, h: Var, state: Var) -> list[Var]:
    b = c.b
    # split before adding, so each gate's sum is a fused elementwise op over (batch, units)
    zi, zf, zc, zo = (b.add(x, r) for x, r in zip(c.projections(4), c.gates(c.recurrent(h), 4)))
    i, f, o = c.gate(zi), c.gate(zf), c.gate(zo)
    new_state = b.add(b.mul(f, state), b.mul(i, c.act(zc)))
    return [b.mul(o, c.act(new_state)), new_state]


def gru_cell(c: Cell, h: Var) -> list[Var]:
    b = c.b
    xz, xr, xh = c.projections(3)
    if c.config["reset_after"]:
        # split before adding the bias, as in the LSTM: the whole cell is then one fused loop
        hz, hr, hh = c.gates(c.recurrent(h), 3)
        if "recurrent_bias" in c.weights:
            hz, hr, hh = (b.add(p, bias) for p, bias in zip((hz, hr, hh), c.gates(c.weights["recurrent_bias"], 3)))
        z, r = c.gate(b.add(xz, hz)), c.gate(b.add(xr, hr))
        candidate = c.act(b.add(xh, b.mul(r, hh)))
    else:
        hz, hr = c.b.split(c.recurrent(h, "recurrent_kernel_zr"), sizes=(c.config["units"],) * 2, axis=1)
        z, r = c.gate(b.add(xz, hz)), c.gate(b.add(xr, hr))
        candidate = c.act(b.add(xh, c.recurrent(b.mul(r, h), "recurrent_kernel_h")))
    return [b.add(b.mul(z, h), b.mul(b.sub(1.0, z), candidate))]


CELLS = {"simple_rnn": simple_rnn_cell, "lstm": lstm_cell, "gru": gru_cell}
STATES = {"simple_rnn": ("h",), "lstm": ("h", "c"), "gru": ("h",)}


@dataclass
class Run:
    """One direction of a recurrent layer, lowered: stacked outputs (time-major, input order) and final states."""

    sequence: Var
    last: Var
    states: list[Var]


def run_recurrent(
    ctx,
    kind: str,
    config: dict,
    params: dict[str, Var],
    inputs: list[Var],
    mask: Var | None,
    go_backwards: bool,
    zero_output_for_mask: bool = False,
) -> Run:
    b, units = ctx.b, config["units"]
    x, *initial = inputs
    batch = x.shape[0]
    if ctx.training and config["dropout"] > 0:  # one keep-mask per sequence, shared by all steps (Keras 3)
        keep = ctx.noise(x.type.with_dims((batch, x.shape[2])), config["dropout"], config["seed"])
        x = b.mul(x, b.reshape(keep, shape=(batch, 1, x.shape[2])))
    projected = b.matmul(b.transpose(x, perm=(1, 0, 2)), params["kernel"])
    bias = params.get("bias")
    weights: dict[str, Var] = {}
    if bias is not None and bias.rank == 2:  # GRU reset_after: input bias row, recurrent bias row
        input_bias, recurrent_bias = b.split(bias, sizes=(1, 1), axis=0)
        bias = b.reshape(input_bias, shape=(3 * units,))
        weights["recurrent_bias"] = b.reshape(recurrent_bias, shape=(3 * units,))
    if bias is not None:  # added inside the cell, in the loop that reads the projection anyway
        weights["input_bias"] = bias
    if kind == "gru" and not config["reset_after"]:
        weights["recurrent_kernel_zr"], weights["recurrent_kernel_h"] = b.split(
            params["recurrent_kernel"], sizes=(2 * units, units), axis=1
        )
    else:
        weights["recurrent_kernel"] = params["recurrent_kernel"]
    if ctx.training and config["recurrent_dropout"] > 0:
        state_type = x.type.with_dims((batch, units))
        weights["recurrent_keep"] = ctx.noise(state_type, config["recurrent_dropout"], config["seed"])
    carried = ctx.take_carried(len(STATES[kind]))  # a stateful layer's: given initial states still update them
    initial = initial or carried

    def step(bb: Builder, xs: list[Var], consts: dict[str, Var], states: list[Var]) -> tuple[Var, list[Var]]:
        new = CELLS[kind](Cell(bb, config, xs[0], consts), *states)
        return new[0], new

    widths = [units] * len(STATES[kind])
    run = run_steps(b, step, x, initial, widths, units, [projected], weights, mask, go_backwards, zero_output_for_mask)
    if carried:
        ctx.carry(carried, run.states)
    return run


Step = Callable[[Builder, list[Var], dict[str, Var], list[Var]], tuple[Var, list[Var]]]
"""One step of a cell, written into the loop body's builder: (builder, the step's slices of `xs`, the constants,
the states) -> (the step's output, the new states)."""


def run_steps(
    b: Builder,
    step: Step,
    x: Var,
    initial: list[Var],
    widths: list[int],
    output_width: int,
    xs: list[Var],
    consts: dict[str, Var],
    mask: Var | None,
    go_backwards: bool,
    zero_output_for_mask: bool = False,
    output_is_state: bool = True,
) -> Run:
    """The time loop of any cell over the batch-major sequence `x`, reading time-major `xs` at each step: the states
    start at `initial` (zeros of `widths` when none are given), a masked step keeps the previous states and repeats
    the previous output (or outputs zeros, `zero_output_for_mask`). `output_is_state`: the step's output is its first
    new state, so that it needs no carry of its own."""
    batch = x.shape[0]
    # Keras carries the last output separately from the state, starting at zeros: it differs from h
    # only while leading steps are masked and the initial state is not zero
    carry_output = not output_is_state or (mask is not None and bool(initial) and not zero_output_for_mask)
    if not initial:
        initial = [b.fill(x, value=0.0, lead=1, tail=(width,)) for width in widths]
    carries = [*initial, b.fill(x, value=0.0, lead=1, tail=(output_width,))] if carry_output else list(initial)
    if mask is not None:
        xs = [*xs, b.reshape(b.transpose(mask, perm=(1, 0)), shape=(mask.shape[1], batch, 1))]
    body = _step_body(step, carries, xs, consts, len(initial), mask is not None, carry_output, zero_output_for_mask)
    outs = b.scan(
        *carries, *xs, *consts.values(), body=body, num_carry=len(carries), num_xs=len(xs), reverse=go_backwards
    )
    states, sequence = outs[: len(initial)], outs[len(carries)]
    last = outs[len(initial)] if carry_output else states[0]
    return Run(sequence, last, states)


def _step_body(step, carries, xs, consts, num_states, masked, carry_output, zero_output_for_mask) -> Program:
    bb = Builder()
    inner_carries = [bb.var(v.type, "h") for v in carries]
    inner_xs = [bb.var(v.type.with_dims(v.shape[1:]), "x") for v in xs]
    inner_consts = {name: bb.var(v.type, name[:1]) for name, v in consts.items()}
    states = inner_carries[:num_states]
    output, new = step(bb, inner_xs[: len(inner_xs) - masked], inner_consts, states)
    if masked:  # a step whose mask is 0 keeps the previous state
        step_mask = inner_xs[-1]
        new = [bb.add(old, bb.mul(step_mask, bb.sub(value, old))) for old, value in zip(states, new)]
        if zero_output_for_mask:
            output = bb.mul(output, step_mask)
        elif carry_output:
            previous = inner_carries[-1]
            output = bb.add(previous, bb.mul(step_mask, bb.sub(output, previous)))
        else:
            output = new[0]
    if carry_output:
        new = [*new, output]
    return bb.program([*inner_carries, *inner_xs, *inner_consts.values()], [*new, output])


def run_stacked(
    ctx,
    config: dict,
    params: dict[str, Var],
    inputs: list[Var],
    mask: Var | None,
    go_backwards: bool,
    zero_output: bool,
) -> Run:
    """Stacked cells, each over the whole output sequence of the one before, in its own fused loop.

    This is exactly Keras's per-step stacking: at step t cell k reads only cell k-1's output at step t and its
    own states, which is what cell k-1's sequence holds at t, whichever direction they all run in. A masked
    step keeps every cell's states whatever input it got, so an earlier cell's output there does not matter.
    """
    x, *initial = inputs
    runs: list[Run] = []
    for index, cell in enumerate(config["cells"]):
        sequence = ctx.b.transpose(runs[-1].sequence, perm=(1, 0, 2)) if runs else x
        prefix = cell_prefix(index)
        own = _under(params, prefix)
        count = len(STATES[cell.kind.name])
        cell_initial, initial = initial[:count], initial[count:]
        cell_inputs = [sequence, *cell_initial]
        runs.append(run_recurrent(ctx, cell.kind.name, cell.config, own, cell_inputs, mask, go_backwards, zero_output))
    return Run(runs[-1].sequence, runs[-1].last, [state for run in runs for state in run.states])


def _under(params: dict[str, Var], prefix: str) -> dict[str, Var]:
    """The weights named under `prefix` (a stacked cell's, a wrapped layer's), by their names within it."""
    return {name[len(prefix) :]: v for name, v in params.items() if name.startswith(prefix)}


LOOPS: dict[str, Callable[..., Run]] = {}
"""Recurrent kinds whose loops are lowered in other modules (`rnn`: `kdsl.passes.lower_cells`), each with
`run_layer`'s arguments after the kind."""


def run_layer(ctx, kind: str, config: dict, params: dict[str, Var], inputs, mask, go_backwards, zero_output) -> Run:
    """One direction of a recurrent layer: a single cell's loop, or stacked cells' loops one after another."""
    if kind == "stacked_rnn":
        return run_stacked(ctx, config, params, inputs, mask, go_backwards, zero_output)
    if kind in LOOPS:
        return LOOPS[kind](ctx, config, params, inputs, mask, go_backwards, zero_output)
    return run_recurrent(ctx, kind, config, params, inputs, mask, go_backwards, zero_output)


def _sequence_output(b: Builder, run: Run, reversed_time: bool) -> Var:
    """Batch-major; Keras returns a go_backwards layer's outputs in processing order, reversed time."""
    sequence = b.flip(run.sequence, axis=0) if reversed_time else run.sequence
    return b.transpose(sequence, perm=(1, 0, 2))


@rule("simple_rnn", "lstm", "gru", "stacked_rnn")
def recurrent(ctx, config, inputs, masks, types):
    kind = ctx.layer.kind.name
    run = run_layer(ctx, kind, config, ctx.params, inputs, masks[0], config["go_backwards"], False)
    output = _sequence_output(ctx.b, run, config["go_backwards"]) if config["return_sequences"] else run.last
    return [output, *run.states] if config["return_state"] else [output]


@rule("bidirectional")
def bidirectional(ctx, config, inputs, masks, types):
    """Keras's Bidirectional: with a mask and return_sequences, masked steps output zeros in both directions."""
    b, inner = ctx.b, config["layer"]
    kind, inner_config = inner.kind.name, inner.config
    outputs, states = [], []
    for direction, backwards in (("forward", False), ("backward", True)):
        prefix = f"{direction}_{kind}/"
        params = _under(ctx.params, prefix)
        go_backwards = backwards != inner_config["go_backwards"]
        zero_output = inner_config["return_sequences"] and masks[0] is not None
        run = run_layer(ctx, kind, inner_config, params, inputs, masks[0], go_backwards, zero_output)
        if inner_config["return_sequences"]:
            # the backward copy's output is flipped back to input order
            outputs.append(_sequence_output(b, run, go_backwards != backwards))
        else:
            outputs.append(run.last)
        states += run.states
    forward, backward = outputs
    merged = {
        "concat": lambda: [b.concat(forward, backward, axis=forward.rank - 1)],
        "sum": lambda: [b.add(forward, backward)],
        "mul": lambda: [b.mul(forward, backward)],
        "ave": lambda: [b.mul(b.add(forward, backward), 0.5)],
        None: lambda: [forward, backward],
    }[config["merge_mode"]]()
    return [*merged, *states] if inner_config["return_state"] else merged
