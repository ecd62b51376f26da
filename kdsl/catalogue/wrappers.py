"""Layers that wrap another layer: Bidirectional and TimeDistributed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from kdsl.catalogue.args import Arg, one_of
from kdsl.catalogue.base import LayerKind, expect_min_rank, layer_arg
from kdsl.errors import KdslShapeError
from kdsl.ir.graph import LayerSpec
from kdsl.ir.types import TensorType

RECURRENT_KINDS = ("simple_rnn", "lstm", "gru", "stacked_rnn", "rnn")


def _inner(config) -> LayerSpec:
    return config["layer"]


class Bidirectional(LayerKind):
    """Runs the layer forwards and a copy backwards; weights are the forward layer's, then the backward's."""

    name, keras = "bidirectional", "Bidirectional"
    args = (
        Arg("layer", layer_arg(RECURRENT_KINDS, "a recurrent layer like `lstm(32)`"), positional=True),
        Arg("merge_mode", one_of("concat", "sum", "mul", "ave", None), "concat"),
    )
    unsupported = {
        "backward_layer": "the backward layer is always a copy of `layer` running backwards",
        "weights": "set weights after building with `set_weights`",
    }

    def num_outputs(self, config):
        inner = _inner(config)
        states = inner.kind.num_outputs(inner.config) - 1
        return (1 if config["merge_mode"] else 2) + 2 * states

    def output_types(self, config, inputs):
        inner = _inner(config)
        output, *states = inner.kind.output_types(inner.config, inputs)
        if config["merge_mode"] == "concat":
            outputs = [output.with_dims((*output.dims[:-1], 2 * output.dims[-1]))]
        elif config["merge_mode"] is None:
            outputs = [output, output]
        else:
            outputs = [output]
        return outputs + states + states

    def params(self, config, inputs):
        inner = _inner(config)
        params = inner.kind.params(inner.config, inputs)
        return [
            replace(p, name=f"{direction}_{inner.kind.name}/{p.name}")
            for direction in ("forward", "backward")
            for p in params
        ]

    def carried(self, config, inputs: Sequence[TensorType]) -> list[tuple[str, TensorType]]:
        """A stateful layer's states, the forward copy's then the backward's, as Keras's two layers keep them."""
        inner = _inner(config)
        states = inner.kind.carried(inner.config, inputs)
        return [(f"{direction}_{name}", type) for direction in ("forward", "backward") for name, type in states]

    def output_masks(self, config, input_masks):
        inner = _inner(config)
        sequence_masked, *_ = inner.kind.output_masks(inner.config, input_masks)
        outputs = 1 if config["merge_mode"] else 2
        return [sequence_masked] * outputs + [False] * (self.num_outputs(config) - outputs)


class TimeDistributed(LayerKind):
    """Applies the layer to every timestep: (batch, time, ...) -> (batch, time, ...)."""

    name, keras = "time_distributed", "TimeDistributed"
    args = (Arg("layer", layer_arg(None, "a layer like `dense(10)`"), positional=True),)

    def output_types(self, config, inputs):
        (x,) = inputs
        expect_min_rank(self, x, 3)
        inner = _inner(config)
        if inner.kind.num_outputs(inner.config) != 1 or inner.kind.min_inputs != 1:
            raise KdslShapeError(
                f"`time_distributed` needs a layer with one input and one output, got `{inner.kind.name}`"
            )
        (step,) = inner.kind.output_types(inner.config, [self._step_type(x)])
        return [step.with_dims((step.dims[0], x.dims[1], *step.dims[1:]))]

    def params(self, config, inputs):
        inner = _inner(config)
        return inner.kind.params(inner.config, [self._step_type(inputs[0])])

    @staticmethod
    def _step_type(x: TensorType) -> TensorType:
        return x.with_dims((x.dims[0], *x.dims[2:]))
