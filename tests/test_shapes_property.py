"""Shape inference and parameter counts, checked on random `.kd` models against formulas written here.

The generator builds a random stack of layers, writing the `.kd` text and, alongside it, what
Keras would make of it: the output shape and each layer's parameter count, from the formulas
below (never from kdsl's catalogue). Known Keras summaries pin the formulas down.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, note, settings
from hypothesis import strategies as st

from kdsl.ir.graph import Graph
from kdsl.lang import load

EXAMPLES = Path(__file__).parent.parent / "examples"

PROPERTY = settings(max_examples=60, deadline=None)

dims_ = st.integers(1, 16)
steps_ = st.integers(1, 8)
bools = st.booleans()


# --- Keras's parameter counts, written out ------------------------------------------------------


def dense_params(n_in: int, units: int, use_bias: bool = True) -> int:
    return n_in * units + (units if use_bias else 0)


def simple_rnn_params(n_in: int, units: int) -> int:
    return n_in * units + units * units + units


def lstm_params(n_in: int, units: int) -> int:
    return 4 * (n_in * units + units * units + units)


def gru_params(n_in: int, units: int, reset_after: bool = True) -> int:
    if reset_after:  # separate input and recurrent biases: bias shape (2, 3 * units)
        return 3 * (n_in * units + units * units) + 2 * 3 * units
    return 3 * (n_in * units + units * units + units)


def embedding_params(input_dim: int, output_dim: int) -> int:
    return input_dim * output_dim


def batch_norm_params(features: int, center: bool = True, scale: bool = True) -> tuple[int, int]:
    """(all, trainable): gamma and beta train, the moving mean and variance do not."""
    trainable = features * (int(center) + int(scale))
    return trainable + 2 * features, trainable


RNN_PARAMS: dict[str, Callable[..., int]] = {"simple_rnn": simple_rnn_params, "lstm": lstm_params, "gru": gru_params}
RNN_STATES = {"simple_rnn": 1, "lstm": 2, "gru": 1}
SPELLINGS = {  # how a layer may be written: its `.kd` name, aliases and Keras class name
    "dense": ("dense", "Dense"),
    "dropout": ("dropout", "Dropout"),
    "activation": ("activation", "Activation"),
    "batch_normalization": ("batch_normalization", "batch_norm", "BatchNormalization"),
    "flatten": ("flatten", "Flatten"),
    "repeat_vector": ("repeat_vector", "RepeatVector"),
    "time_distributed": ("time_distributed", "TimeDistributed"),
    "bidirectional": ("bidirectional", "Bidirectional"),
    "simple_rnn": ("simple_rnn", "SimpleRNN"),
    "lstm": ("lstm", "LSTM"),
    "gru": ("gru", "GRU"),
    "concatenate": ("concatenate", "Concatenate"),
    "add": ("add", "Add"),
    "multiply": ("multiply", "Multiply"),
    "embedding": ("embedding", "Embedding"),
}


# --- helpers ------------------------------------------------------------------------------------


def kd_type(dims: tuple[int, ...], dtype: str = "f32") -> str:
    return f"{dtype}[{', '.join(['batch', *map(str, dims)])}]"


def kd_bool(value: bool) -> str:
    return "true" if value else "false"


def load_model(text: str) -> Graph:
    return load(text).model()


def output_dims(graph: Graph) -> list[tuple]:
    return [value.type.dims for value in graph.outputs]


def layer_counts(graph: Graph) -> list[tuple[str, int, int]]:
    """(kind, parameters, trainable parameters) of each layer, in order."""
    return [(layer.kind.name, layer.param_count(), layer.param_count(trainable=True)) for layer in graph.layers()]


def single_layer(input_dims: tuple[int, ...], call: str, dtype: str = "f32", outputs: str = "y") -> Graph:
    """A model applying one layer call (written with `x` as its input) to an input of the given dims."""
    targets = outputs.strip("()")
    return load_model(f"model One(x: {kd_type(input_dims, dtype)}) -> {outputs} {{\n    {targets} = {call}\n}}\n")


# --- random stacks ------------------------------------------------------------------------------


@dataclass
class Expected:
    kind: str
    params: int = 0
    trainable: int | None = None  # None: all of them

    def row(self) -> tuple[str, int, int]:
        return (self.kind, self.params, self.params if self.trainable is None else self.trainable)


@dataclass
class Stage:
    """One statement of a stack: its right-hand side for input `x`, the dims after it, the layers it makes."""

    render: Callable[[str], str]
    dims: tuple[int, ...]
    layers: list[Expected] = field(default_factory=list)


def applied(draw, kind: str, args: list[str], dims: tuple[int, ...], layers: list[Expected]) -> Stage:
    """A one-layer stage, written at random as `layer(x, args)` or `x |> layer(args)` (or `x |> layer`)."""
    name = draw(st.sampled_from(SPELLINGS[kind]))
    style = draw(st.sampled_from(["call", "pipe", "bare pipe"] if not args else ["call", "pipe"]))
    if style == "call":
        return Stage(lambda x: f"{name}({', '.join([x, *args])})", dims, layers)
    if style == "bare pipe":
        return Stage(lambda x: f"{x} |> {name}", dims, layers)
    return Stage(lambda x: f"{x} |> {name}({', '.join(args)})", dims, layers)


def dense_stage(draw, dims):
    units, use_bias, trainable = draw(dims_), draw(bools), draw(st.sampled_from([True, True, False]))
    args = [draw(st.sampled_from([str(units), f"units={units}"]))]
    if not use_bias or draw(bools):
        args.append(f"use_bias={kd_bool(use_bias)}")
    if draw(bools):
        args.append(f"activation={draw(st.sampled_from(['relu', 'softmax', 'tanh', 'none']))}")
    params = dense_params(dims[-1], units, use_bias)
    if not trainable:
        args.append("trainable=false")
    return applied(draw, "dense", args, (*dims[:-1], units), [Expected("dense", params, params if trainable else 0)])


def dropout_stage(draw, dims):
    rate = draw(st.sampled_from(["0.0", "0.25", "0.5", "rate=0.1"]))
    return applied(draw, "dropout", [rate], dims, [Expected("dropout")])


def activation_stage(draw, dims):
    name = draw(st.sampled_from(["relu", "tanh", "sigmoid", "activation=gelu"]))
    return applied(draw, "activation", [name], dims, [Expected("activation")])


def batch_norm_stage(draw, dims):
    center, scale = draw(bools), draw(bools)
    args = []
    if not center or draw(bools):
        args.append(f"center={kd_bool(center)}")
    if not scale or draw(bools):
        args.append(f"scale={kd_bool(scale)}")
    total, trainable = batch_norm_params(dims[-1], center, scale)
    return applied(draw, "batch_normalization", args, dims, [Expected("batch_normalization", total, trainable)])


def flatten_stage(draw, dims):
    return applied(draw, "flatten", [], (math.prod(dims),), [Expected("flatten")])


def repeat_vector_stage(draw, dims):
    n = draw(steps_)
    return applied(draw, "repeat_vector", [str(n)], (n, *dims), [Expected("repeat_vector")])


def time_distributed_stage(draw, dims):
    units = draw(dims_)
    inner = f"{draw(st.sampled_from(SPELLINGS['dense']))}({units})"
    expected = Expected("time_distributed", dense_params(dims[-1], units))
    return applied(draw, "time_distributed", [inner], (*dims[:-1], units), [expected])


@dataclass
class RecurrentLayer:
    kind: str
    args: list[str]
    units: int
    sequences: bool
    params: int


def recurrent_layer(draw, n_in: int) -> RecurrentLayer:
    """A random SimpleRNN, LSTM or GRU on `n_in` features, with the parameters Keras gives it."""
    kind = draw(st.sampled_from(sorted(RNN_PARAMS)))
    units, sequences = draw(dims_), draw(bools)
    args = [draw(st.sampled_from([str(units), f"units={units}"]))]
    if sequences or draw(bools):
        args.append(f"return_sequences={kd_bool(sequences)}")
    params = RNN_PARAMS[kind](n_in, units)
    if kind == "gru" and draw(bools):
        reset_after = draw(bools)
        args.append(f"reset_after={kd_bool(reset_after)}")
        params = gru_params(n_in, units, reset_after)
    return RecurrentLayer(kind, args, units, sequences, params)


def recurrent_stage(draw, dims):
    timesteps, n_in = dims
    rnn = recurrent_layer(draw, n_in)
    out = (timesteps, rnn.units) if rnn.sequences else (rnn.units,)
    return applied(draw, rnn.kind, rnn.args, out, [Expected(rnn.kind, rnn.params)])


def bidirectional_stage(draw, dims):
    timesteps, n_in = dims
    rnn = recurrent_layer(draw, n_in)
    inner = f"{draw(st.sampled_from(SPELLINGS[rnn.kind]))}({', '.join(rnn.args)})"
    merge = draw(st.sampled_from(["concat", "sum", "mul", "ave"]))
    args = [inner] + ([f"merge_mode={merge}"] if merge != "concat" or draw(bools) else [])
    width = 2 * rnn.units if merge == "concat" else rnn.units
    out = (timesteps, width) if rnn.sequences else (width,)
    return applied(draw, "bidirectional", args, out, [Expected("bidirectional", 2 * rnn.params)])


def concatenate_stage(draw, dims):
    """`x` joined with a dense branch of it along the last axis."""
    units = draw(dims_)
    name = draw(st.sampled_from(SPELLINGS["concatenate"]))
    layers = [Expected("dense", dense_params(dims[-1], units)), Expected("concatenate")]
    if draw(bools):
        render = lambda x: f"{name}({x}, dense({x}, {units}))"  # noqa: E731
    else:
        render = lambda x: f"{name}([{x}, {x} |> dense({units})])"  # noqa: E731
    return Stage(render, (*dims[:-1], dims[-1] + units), layers)


def elementwise_stage(draw, dims):
    """`x` added to (or multiplied by) a dense branch of it of the same width."""
    kind = draw(st.sampled_from(["add", "multiply"]))
    name = draw(st.sampled_from(SPELLINGS[kind]))
    layers = [Expected("dense", dense_params(dims[-1], dims[-1])), Expected(kind)]
    return Stage(lambda x: f"{name}({x}, dense({x}, {dims[-1]}))", dims, layers)


ANY_RANK = (
    dense_stage, dropout_stage, activation_stage, batch_norm_stage, flatten_stage, concatenate_stage, elementwise_stage,
)  # fmt: skip
BY_RANK = {  # extra stages by the number of non-batch dims
    1: (repeat_vector_stage,),
    2: (recurrent_stage, recurrent_stage, bidirectional_stage, time_distributed_stage),
    3: (time_distributed_stage,),
}


@dataclass
class Stack:
    text: str
    output: tuple[int, ...]
    layers: list[Expected]


@st.composite
def stacks(draw) -> Stack:
    start = draw(st.sampled_from(["tokens", "f32"]))
    layers: list[Expected] = []
    lines: list[str] = []
    if start == "tokens":
        timesteps, vocabulary, width = draw(steps_), draw(dims_), draw(dims_)
        input_type = kd_type((timesteps,), "i32")
        call = f"{draw(st.sampled_from(SPELLINGS['embedding']))}(x, {vocabulary}, output_dim={width})"
        lines.append(f"h0 = {call}")
        layers.append(Expected("embedding", embedding_params(vocabulary, width)))
        dims, current = (timesteps, width), "h0"
    else:
        dims = (*draw(st.lists(steps_, min_size=0, max_size=2)), draw(dims_))
        input_type, current = kd_type(dims), "x"
    for i in range(1, draw(st.integers(1, 5)) + 1):
        make = draw(st.sampled_from(ANY_RANK + BY_RANK.get(len(dims), ())))
        stage = make(draw, dims)
        lines.append(f"h{i} = {stage.render(current)}")
        dims, current = stage.dims, f"h{i}"
        layers.extend(stage.layers)
    lines[-1] = "y" + lines[-1][len(current) :]
    declared = f": {kd_type(dims)}" if draw(bools) else ""
    body = "".join(f"    {line}\n" for line in lines)
    return Stack(f"model Net(x: {input_type}) -> y{declared} {{\n{body}}}\n", dims, layers)


@PROPERTY
@given(stacks())
def test_random_stack_shapes_and_parameter_counts(stack):
    note(stack.text)
    graph = load_model(stack.text)
    assert output_dims(graph) == [("batch", *stack.output)]
    assert graph.outputs[0].type.dtype == "f32"
    assert layer_counts(graph) == [layer.row() for layer in stack.layers]
    assert graph.param_count() == sum(layer.params for layer in stack.layers)
    assert graph.param_count(trainable=True) + graph.param_count(trainable=False) == graph.param_count()


# --- layers one at a time -----------------------------------------------------------------------


@PROPERTY
@given(kind=st.sampled_from(sorted(RNN_PARAMS)), timesteps=steps_, n_in=dims_, units=dims_, sequences=bools)
def test_return_state_gives_the_output_and_each_state(kind, timesteps, n_in, units, sequences):
    names = ["out", "h", "c"][: 1 + RNN_STATES[kind]]
    call = f"{kind}(x, {units}, return_sequences={kd_bool(sequences)}, return_state=true)"
    graph = single_layer((timesteps, n_in), call, outputs=f"({', '.join(names)})")
    out = (timesteps, units) if sequences else (units,)
    assert output_dims(graph) == [("batch", *out)] + [("batch", units)] * RNN_STATES[kind]
    assert graph.output_names == names
    assert graph.param_count() == RNN_PARAMS[kind](n_in, units)


@PROPERTY
@given(kind=st.sampled_from(sorted(RNN_PARAMS)), timesteps=steps_, n_in=dims_, units=dims_, sequences=bools)
def test_bidirectional_without_merge_gives_both_directions(kind, timesteps, n_in, units, sequences):
    call = f"bidirectional(x, {kind}({units}, return_sequences={kd_bool(sequences)}), merge_mode=none)"
    graph = single_layer((timesteps, n_in), call, outputs="(forward, backward)")
    out = ("batch", timesteps, units) if sequences else ("batch", units)
    assert output_dims(graph) == [out, out]
    assert graph.param_count() == 2 * RNN_PARAMS[kind](n_in, units)


@PROPERTY
@given(merge=st.sampled_from(["concat", "none"]), timesteps=steps_, n_in=dims_, units=dims_)
def test_bidirectional_lstm_return_state_gives_both_directions_states(merge, timesteps, n_in, units):
    outputs = ["out"] if merge == "concat" else ["forward", "backward"]
    names = [*outputs, "forward_h", "forward_c", "backward_h", "backward_c"]
    call = f"bidirectional(x, lstm({units}, return_state=true), merge_mode={merge})"
    graph = single_layer((timesteps, n_in), call, outputs=f"({', '.join(names)})")
    width = 2 * units if merge == "concat" else units
    assert output_dims(graph) == [("batch", width)] * len(outputs) + [("batch", units)] * 4


@PROPERTY
@given(timesteps=steps_, n_in=dims_, units=dims_, reset_after=bools, sequences=bools)
def test_gru_bias_layout(timesteps, n_in, units, reset_after, sequences):
    call = f"gru(x, {units}, reset_after={kd_bool(reset_after)}, return_sequences={kd_bool(sequences)})"
    graph = single_layer((timesteps, n_in), call)
    (layer,) = graph.layers()
    bias = next(p for p in layer.params if p.name == "bias")
    assert bias.shape == ((2, 3 * units) if reset_after else (3 * units,))
    assert graph.param_count() == gru_params(n_in, units, reset_after)


@PROPERTY
@given(dims=st.lists(dims_, min_size=1, max_size=3).map(tuple), vocabulary=dims_, width=dims_)
def test_embedding_appends_its_width(dims, vocabulary, width):
    graph = single_layer(dims, f"embedding(x, {vocabulary}, {width})", dtype="i32")
    assert output_dims(graph) == [("batch", *dims, width)]
    assert graph.outputs[0].type.dtype == "f32"
    assert graph.param_count() == embedding_params(vocabulary, width)


@PROPERTY
@given(dims=st.lists(dims_, min_size=1, max_size=3).map(tuple), center=bools, scale=bools)
def test_batch_normalization_parameters(dims, center, scale):
    graph = single_layer(dims, f"batch_normalization(x, center={kd_bool(center)}, scale={kd_bool(scale)})")
    total, trainable = batch_norm_params(dims[-1], center, scale)
    assert output_dims(graph) == [("batch", *dims)]
    assert (graph.param_count(), graph.param_count(trainable=True)) == (total, trainable)
    assert graph.param_count(trainable=False) == 2 * dims[-1]


@PROPERTY
@given(dims=st.lists(dims_, min_size=1, max_size=4).map(tuple))
def test_flatten_multiplies_the_dims(dims):
    assert output_dims(single_layer(dims, "flatten(x)")) == [("batch", math.prod(dims))]


@PROPERTY
@given(timesteps=steps_, dims=st.lists(dims_, min_size=1, max_size=2).map(tuple), units=dims_)
def test_time_distributed_dense_maps_every_step(timesteps, dims, units):
    graph = single_layer((timesteps, *dims), f"time_distributed(x, dense({units}))")
    assert output_dims(graph) == [("batch", timesteps, *dims[:-1], units)]
    assert graph.param_count() == dense_params(dims[-1], units)


@PROPERTY
@given(n=steps_, features=dims_)
def test_repeat_vector(n, features):
    assert output_dims(single_layer((features,), f"repeat_vector(x, {n})")) == [("batch", n, features)]


@PROPERTY
@given(data=st.data(), rank=st.integers(1, 3), count=st.integers(2, 4))
def test_concatenate_adds_up_the_axis(data, rank, count):
    shape = data.draw(st.lists(dims_, min_size=rank, max_size=rank))
    axis = data.draw(st.integers(1, rank))  # counting the batch dim as 0
    sizes = data.draw(st.lists(dims_, min_size=count, max_size=count))
    types = [kd_type((*shape[: axis - 1], size, *shape[axis:])) for size in sizes]
    written_axis = data.draw(st.sampled_from([axis, axis - rank - 1]))  # also from the end: -1 is the last
    names = [f"x{i}" for i in range(count)]
    inputs = ", ".join(f"{name}: {type_}" for name, type_ in zip(names, types))
    text = f"model Cat({inputs}) -> y {{\n    y = concatenate({', '.join(names)}, axis={written_axis})\n}}\n"
    expected = [*shape[: axis - 1], sum(sizes), *shape[axis:]]
    assert output_dims(load_model(text)) == [("batch", *expected)]


@PROPERTY
@given(kind=st.sampled_from(["add", "multiply"]), dims=st.lists(dims_, min_size=1, max_size=3), count=st.integers(2, 4))
def test_elementwise_merges_keep_the_shape(kind, dims, count):
    names = [f"x{i}" for i in range(count)]
    inputs = ", ".join(f"{name}: {kd_type(tuple(dims))}" for name in names)
    text = f"model Merge({inputs}) -> y {{\n    y = {kind}({', '.join(names)})\n}}\n"
    assert output_dims(load_model(text)) == [("batch", *dims)]


@settings(max_examples=10, deadline=None)
@given(data=st.data(), dims=st.lists(st.integers(1, 6), min_size=1, max_size=3))
def test_reshape_keeps_the_element_count(data, dims):
    size = math.prod(dims)
    first = data.draw(st.sampled_from([d for d in range(1, size + 1) if size % d == 0]))
    target = [first, size // first]
    written = data.draw(st.sampled_from([target, [first, -1], [-1, size // first]]))
    graph = single_layer(tuple(dims), f"reshape(x, target_shape=[{', '.join(map(str, written))}])")
    assert output_dims(graph) == [("batch", *target)]


# --- Keras's own summaries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "input_dims, call, keras_count",
    [
        ((10, 64), "lstm(x, 128)", 98_816),
        ((10, 64), "gru(x, 256)", 247_296),
        ((10, 256), "simple_rnn(x, 128)", 49_280),
        ((784,), "dense(x, 300)", 235_500),
        ((10, 64), "bidirectional(x, lstm(128))", 2 * 98_816),
    ],
)
def test_known_keras_counts(input_dims, call, keras_count):
    assert single_layer(input_dims, call).param_count() == keras_count


def test_formulas_agree_with_keras():
    assert lstm_params(64, 128) == 98_816
    assert gru_params(64, 256) == 247_296
    assert simple_rnn_params(256, 128) == 49_280


@pytest.mark.parametrize(
    "example, per_layer, non_trainable",
    [
        ("gru_stack", [64_000, 247_296, 49_280, 1_290], 0),
        ("text_lstm", [64_000, 98_816, 1_290], 0),
        ("fashion_mlp", [0, 235_500, 30_100, 1_010], 0),
        ("mnist_lstm", [lstm_params(28, 64), batch_norm_params(64)[0], dense_params(64, 10)], 128),
        (
            "headline",
            [  # Keras's order of a functional model's layers: by depth, so the auxiliary head comes last
                embedding_params(10_000, 512),
                lstm_params(512, 32),
                0,
                dense_params(37, 64),
                dense_params(64, 64),
                dense_params(64, 1),
                dense_params(32, 1),
            ],
            0,
        ),
    ],
)
def test_example_parameter_counts(example, per_layer, non_trainable):
    graph = load((EXAMPLES / f"{example}.kd").read_text(encoding="utf-8")).model()
    assert [layer.param_count() for layer in graph.layers()] == per_layer
    assert graph.param_count(trainable=False) == non_trainable


@pytest.mark.parametrize(
    "example, total",
    [("gru_stack", 361_866), ("text_lstm", 164_106), ("fashion_mlp", 266_610), ("mnist_lstm", 24_714)],
)
def test_example_totals_match_keras(example, total):
    assert load((EXAMPLES / f"{example}.kd").read_text(encoding="utf-8")).model().param_count() == total
