"""Recurrent layers: SimpleRNN, LSTM and GRU, with Keras's weight layout and gate order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import ClassVar

from kdsl.catalogue.args import Arg, boolean, positive_int, rate, seed
from kdsl.catalogue.base import (
    ACTIVITY_HINT,
    CONSTRAINT_HINT,
    Config,
    LayerKind,
    expect_float,
    expect_rank,
    fixed,
    initializer_arg,
    regularizer_arg,
    show,
    weight,
)
from kdsl.catalogue.functions import activation
from kdsl.errors import KdslShapeError
from kdsl.ir.graph import ParamSpec
from kdsl.ir.types import TensorType

RECURRENT_ARGS = (
    Arg("units", positive_int, positional=True),
    Arg("activation", activation, "tanh"),
    Arg("use_bias", boolean, True),
    initializer_arg("kernel", "glorot_uniform"),
    initializer_arg("recurrent", "orthogonal"),
    initializer_arg("bias", "zeros"),
    regularizer_arg("kernel"),
    regularizer_arg("recurrent"),
    regularizer_arg("bias"),
    Arg("dropout", rate, 0.0),
    Arg("recurrent_dropout", rate, 0.0),
    Arg("return_sequences", boolean, False),
    Arg("return_state", boolean, False),
    Arg("go_backwards", boolean, False),
    Arg("stateful", boolean, False),
    Arg("seed", seed, None),
)
RECURRENT_ACTIVATION = Arg("recurrent_activation", activation, "sigmoid")

RECURRENT_UNSUPPORTED = {
    "unroll": "kdsl always compiles the whole time loop into one kernel; remove `unroll`",
    "time_major": "inputs are (batch, timesteps, features)",
    "use_cudnn": "kdsl picks the kernel itself; `kdsl compile --explain` shows which",
    "kernel_constraint": CONSTRAINT_HINT,
    "recurrent_constraint": CONSTRAINT_HINT,
    "bias_constraint": CONSTRAINT_HINT,
    "activity_regularizer": ACTIVITY_HINT,
}


# what `RNN` takes besides its cell(s), and what it refuses, whatever the cells (a stack of them, one of one's own)
RNN_ARGS = (
    Arg("return_sequences", boolean, False),
    Arg("return_state", boolean, False),
    Arg("go_backwards", boolean, False),
    Arg("stateful", boolean, False),
)
RNN_UNSUPPORTED = {
    **{k: v for k, v in RECURRENT_UNSUPPORTED.items() if k in ("unroll", "time_major")},
    "zero_output_for_mask": "a masked step repeats the previous output, as Keras's default does",
}


def expect_static_batch(kind: LayerKind, x: TensorType) -> None:
    """A stateful RNN keeps one state per sample of a batch: its batch size must be a number, as in Keras."""
    if not isinstance(x.dims[0], int):
        raise KdslShapeError(
            f"`{kind.name}` with `stateful=true` needs a static batch size, found dynamic batch size: "
            f"sequence shape {show(x)}",
            hint="give the model's input a fixed batch size: `Input(shape=..., batch_size=4)` in Python, "
            "`x: f32[4, timesteps, features]` in a .kd file",
        )


class Recurrent(LayerKind):
    """Shared rules: input (batch, timesteps, features), output the last state or the whole sequence."""

    gates: ClassVar[int]
    states: ClassVar[tuple[str, ...]]  # names of the carried states, in Keras's return_state order
    unsupported = RECURRENT_UNSUPPORTED
    max_inputs = 1  # raised to 1 + len(states) by subclasses: initial states come after the sequence

    def state_units(self, config: Config) -> list[tuple[str, int]]:
        """Each carried state's name and width, in Keras's return_state (and initial_state) order."""
        return [(name, config["units"]) for name in self.states]

    def output_units(self, config: Config) -> int:
        return config["units"]

    def num_outputs(self, config: Config) -> int:
        return 1 + (len(self.state_units(config)) if config["return_state"] else 0)

    def output_types(self, config, inputs):
        x, *initial = inputs
        expect_float(self, x)
        expect_rank(self, x, 3, "(batch, timesteps, features)")
        fixed(self, x.dims[2], "number of input features")
        batch, steps = x.dims[0], x.dims[1]
        if config["stateful"]:
            expect_static_batch(self, x)
        states = [(name, TensorType("f32", (batch, units))) for name, units in self.state_units(config)]
        if initial:
            if len(initial) != len(states):
                raise KdslShapeError(
                    f"`{self.name}` takes {len(states)} initial state(s) ({', '.join(n for n, _ in states)}), "
                    f"got {len(initial)}"
                )
            for (name, state), given in zip(states, initial):
                if given != state:
                    raise KdslShapeError(
                        f"`{self.name}` initial state `{name}` must have shape {show(state)}, got {show(given)}"
                    )
        units = self.output_units(config)
        output = TensorType("f32", (batch, steps, units) if config["return_sequences"] else (batch, units))
        return [output] + ([state for _, state in states] if config["return_state"] else [])

    def params(self, config, inputs) -> list[ParamSpec]:
        features, width = inputs[0].dims[2], self.gates * config["units"]
        params = [
            weight("kernel", (features, width), config),
            weight("recurrent_kernel", (config["units"], width), config, prefix="recurrent"),
        ]
        if config["use_bias"]:
            bias = weight("bias", self.bias_shape(config), config)
            if config.get("unit_forget_bias"):
                bias = replace(bias, forget_units=config["units"])
            params.append(bias)
        return params

    def bias_shape(self, config: Config) -> tuple[int, ...]:
        return (self.gates * config["units"],)

    def carried(self, config: Config, inputs: Sequence[TensorType]) -> list[tuple[str, TensorType]]:
        """The states a stateful layer keeps from one batch to the next (none otherwise), named and typed."""
        if not config["stateful"]:
            return []
        batch = inputs[0].dims[0]
        return [(name, TensorType("f32", (batch, units))) for name, units in self.state_units(config)]

    def output_masks(self, config, input_masks: Sequence[bool]) -> list[bool]:
        sequence_masked = bool(input_masks) and input_masks[0] and config["return_sequences"]
        return [sequence_masked] + [False] * (self.num_outputs(config) - 1)


class SimpleRNN(Recurrent):
    name, keras = "simple_rnn", "SimpleRNN"
    gates, states = 1, ("h",)
    max_inputs = 2
    args = RECURRENT_ARGS


class LSTM(Recurrent):
    """Gates in Keras order i, f, c, o along the last axis of each weight."""

    name, keras = "lstm", "LSTM"
    gates, states = 4, ("h", "c")
    max_inputs = 3
    args = (*RECURRENT_ARGS, RECURRENT_ACTIVATION, Arg("unit_forget_bias", boolean, True))


class GRU(Recurrent):
    """Gates in Keras order z, r, h; with `reset_after` (the default) the bias is (2, 3·units)."""

    name, keras = "gru", "GRU"
    gates, states = 3, ("h",)
    max_inputs = 2
    args = (*RECURRENT_ARGS, RECURRENT_ACTIVATION, Arg("reset_after", boolean, True))

    def bias_shape(self, config):
        units = 3 * config["units"]
        return (2, units) if config["reset_after"] else (units,)
