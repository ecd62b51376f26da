"""Every layer's forward pass on kdsl's NumPy backend against the float64 Keras 3 oracle in keras_reference.py.

Hypothesis draws the layer arguments, shapes, batch sizes and sequence lengths (down to 1) and the padding of
masked sequences; both sides get the same float32 weights and inputs, so any difference beyond float32 rounding
is kdsl's equations or semantics. Layers are declared by name (`layer recurrent = ...`) so their parameters are found
by that prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import keras_reference as kr
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdsl.backends.compiled import CompiledModel
from kdsl.lang import load
from kdsl.pipeline import compile_model

# float32 backend against the float64 oracle: after cancellation over a few recurrent steps, float32 rounding of
# terms near 1 leaves errors of a few 1e-6 on small outputs (a GRU with a linear activation: 1.9e-6)
RTOL, ATOL = 1e-5, 5e-6
FORWARD = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RECURRENT = settings(FORWARD, max_examples=40)  # the most argument combinations
ACTIVATIONS = sorted(kr.ACTIVATIONS)
VOCAB = 6  # embedding rows: id 0 is padding when mask_zero=true

seeds = st.integers(0, 2**32 - 1)
sizes = st.integers(1, 5)
steps_ = st.integers(1, 5)
# One (padding, count) per batch row, so the batch size is the number of rows: right padding leaves `count`
# real steps first, left padding puts `count` zeros first, then a fully padded row, scattered zeros, none.
PADDINGS = ("right", "left", "all", "scattered", "none")
rows_ = st.lists(st.tuples(st.sampled_from(PADDINGS), st.integers(0, 5)), min_size=1, max_size=4)


# --- helpers ----------------------------------------------------------------------------------------------------


def kd(value: object) -> str:
    """A Python setting as `.kd` text."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def model_text(inputs: dict[str, str], body: list[str], outputs: list[str]) -> str:
    signature = ", ".join(f"{name}: {type_}" for name, type_ in inputs.items())
    lines = "".join(f"    {line}\n" for line in body)
    return f"model M({signature}) -> ({', '.join(outputs)}) {{\n{lines}}}\n"


def build(text: str, seed: int) -> tuple[CompiledModel, dict[str, np.ndarray]]:
    """Model `M` on the NumPy backend with random O(1) weights (moving variances positive), and those weights."""
    model = compile_model(load(text, "t.kd").models["M"], target="numpy", training=False)
    rng = np.random.default_rng(seed)
    weights = [
        (rng.uniform(0.5, 2.0, w.shape) if name.endswith("moving_variance") else rng.normal(scale=0.5, size=w.shape))
        for name, w in zip(model.param_names, model.weights)
    ]
    model.weights = [w.astype(np.float32) for w in weights]
    return model, dict(zip(model.param_names, model.weights))


def params(weights: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The weights of one layer, keyed by their Keras names (`kernel`, `bias`, ...) as keras_reference takes them."""
    return {name[len(prefix) + 1 :]: w for name, w in weights.items() if name.startswith(prefix + "/")}


def normal(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.normal(size=shape).astype(np.float32)


def padded_ids(rows: list[tuple[str, int]], steps: int, rng: np.random.Generator) -> np.ndarray:
    """Token ids, 0 where a row is padded as drawn (see `rows_`)."""
    ids = rng.integers(1, VOCAB, size=(len(rows), steps)).astype(np.int32)
    for row, (padding, count) in enumerate(rows):
        count = min(count, steps)
        if padding == "right":
            ids[row, count:] = 0
        elif padding == "left":
            ids[row, :count] = 0
        elif padding == "all":
            ids[row] = 0
        elif padding == "scattered":
            ids[row, rng.random(steps) < 0.4] = 0
    return ids


def as_list(result: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    return result if isinstance(result, list) else [result]


def assert_outputs(actual: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert a.shape == e.shape
        np.testing.assert_allclose(a, e, rtol=RTOL, atol=ATOL)


# --- recurrent layers -------------------------------------------------------------------------------------------

RNN_KINDS = ("simple_rnn", "lstm", "gru", "gru_reset_before")
N_STATES = {"simple_rnn": 1, "lstm": 2, "gru": 1, "gru_reset_before": 1}
LAYER_NAME = {"simple_rnn": "simple_rnn", "lstm": "lstm", "gru": "gru", "gru_reset_before": "gru"}
RNN_ACTIVATIONS = ("tanh", "relu", "sigmoid", "softsign", "linear")
GATE_ACTIVATIONS = ("sigmoid", "hard_sigmoid", "tanh")


def rnn_layer(kind: str, units: int, activation: str, gate: str, use_bias: bool, **flags: bool) -> str:
    """`.kd` text of a recurrent layer; `flags` are return_sequences, return_state, go_backwards."""
    args = [str(units), f"activation={activation}", f"use_bias={kd(use_bias)}"]
    args += [f"{name}={kd(value)}" for name, value in flags.items()]
    if kind != "simple_rnn":
        args.append(f"recurrent_activation={gate}")
    if kind == "gru_reset_before":
        args.append("reset_after=false")
    return f"{LAYER_NAME[kind]}({', '.join(args)})"


def rnn_reference(kind: str, weights: dict[str, np.ndarray], activation: str, gate: str) -> Callable:
    """The oracle for a recurrent layer with these weights, taking x and the call options."""
    options = {"activation": activation}
    if kind != "simple_rnn":
        options["recurrent_activation"] = gate
    if kind == "gru_reset_before":
        options["reset_after"] = False
    return partial(getattr(kr, LAYER_NAME[kind]), **weights, **options)


def sequence_input(
    masked: bool, rows: list[tuple[str, int]], steps: int, features: int, time: str, rng: np.random.Generator
) -> tuple[dict[str, str], list[str], list[np.ndarray], np.ndarray | None]:
    """A (batch, steps, features) sequence named `seq`: plain floats, or embedded ids with a padding mask.

    Returns the model inputs, the body lines making `seq`, the input arrays and the mask (None if unmasked).
    """
    if not masked:
        return {"seq": f"f32[batch, {time}, {features}]"}, [], [normal(rng, len(rows), steps, features)], None
    ids = padded_ids(rows, steps, rng)
    body = [f"layer emb = embedding({VOCAB}, {features}, mask_zero=true)", "seq = emb(ids)"]
    return {"ids": f"i32[batch, {time}]"}, body, [ids], kr.embedding_mask(ids)


def embedded(weights: dict[str, np.ndarray], inputs: list[np.ndarray], masked: bool) -> np.ndarray:
    """What `seq` holds on the reference side."""
    return kr.embedding(inputs[0], weights["emb/embeddings"]) if masked else inputs[0]


@pytest.mark.parametrize("kind", RNN_KINDS)
@RECURRENT
@given(
    rows=rows_,
    steps=steps_,
    features=st.integers(1, 4),
    units=sizes,
    return_sequences=st.booleans(),
    return_state=st.booleans(),
    go_backwards=st.booleans(),
    masked=st.booleans(),
    initial=st.booleans(),
    use_bias=st.booleans(),
    activation=st.sampled_from(RNN_ACTIVATIONS),
    gate=st.sampled_from(GATE_ACTIVATIONS),
    symbolic_time=st.booleans(),
    seed=seeds,
)
def test_recurrent(
    kind,
    rows,
    steps,
    features,
    units,
    return_sequences,
    return_state,
    go_backwards,
    masked,
    initial,
    use_bias,
    activation,
    gate,
    symbolic_time,
    seed,
):
    """All flag combinations, masks with every kind of padding, initial states, activations and sizes down to 1."""
    rng = np.random.default_rng(seed)
    inputs, body, arrays, mask = sequence_input(masked, rows, steps, features, "time" if symbolic_time else steps, rng)
    states = [f"s{i}" for i in range(N_STATES[kind])] if initial else []
    initial_states = [normal(rng, len(rows), units) for _ in states]
    inputs.update({name: f"f32[batch, {units}]" for name in states})
    flags = {"return_sequences": return_sequences, "return_state": return_state, "go_backwards": go_backwards}
    layer = rnn_layer(kind, units, activation, gate, use_bias, **flags)
    outputs = ["y", *(f"out_s{i}" for i in range(N_STATES[kind]) if return_state)]
    state_arg = f", initial_state=[{', '.join(states)}]" if states else ""
    body += [f"layer recurrent = {layer}", f"{', '.join(outputs)} = recurrent(seq{state_arg})"]
    model, weights = build(model_text(inputs, body, outputs), seed)

    reference = rnn_reference(kind, params(weights, "recurrent"), activation, gate)
    expected = reference(embedded(weights, arrays, masked), mask=mask, initial_state=initial_states or None, **flags)
    assert_outputs(model.forward(*arrays, *initial_states), as_list(expected))


@pytest.mark.parametrize("kind", RNN_KINDS)
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("initial", [False, True])
def test_recurrent_every_padding_in_one_batch(kind, go_backwards, initial):
    """Right, left, total, scattered and no padding side by side, so each pattern is always covered."""
    steps, features, units = 5, 3, 4
    ids = np.array([[3, 1, 4, 0, 0], [0, 0, 2, 5, 1], [0, 0, 0, 0, 0], [2, 0, 3, 0, 4], [1, 2, 3, 4, 5]], np.int32)
    rng = np.random.default_rng(11)
    states = [normal(rng, len(ids), units) for _ in range(N_STATES[kind])] if initial else []
    names = [f"s{i}" for i in range(len(states))]
    inputs = {"ids": f"i32[batch, {steps}]", **{name: f"f32[batch, {units}]" for name in names}}
    outputs = ["y", *(f"out{i}" for i in range(N_STATES[kind]))]
    flags = {"return_sequences": True, "return_state": True, "go_backwards": go_backwards}
    state_arg = f", initial_state=[{', '.join(names)}]" if names else ""
    body = [
        f"layer emb = embedding({VOCAB}, {features}, mask_zero=true)",
        f"layer recurrent = {rnn_layer(kind, units, 'tanh', 'sigmoid', True, **flags)}",
        f"{', '.join(outputs)} = recurrent(emb(ids){state_arg})",
    ]
    model, weights = build(model_text(inputs, body, outputs), 12)
    reference = rnn_reference(kind, params(weights, "recurrent"), "tanh", "sigmoid")
    x = kr.embedding(ids, weights["emb/embeddings"])
    expected = reference(x, mask=kr.embedding_mask(ids), initial_state=states or None, **flags)
    assert_outputs(model.forward(ids, *states), expected)


# --- bidirectional ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@RECURRENT
@given(
    kind=st.sampled_from(RNN_KINDS),
    rows=rows_,
    steps=steps_,
    features=st.integers(1, 4),
    units=sizes,
    return_sequences=st.booleans(),
    return_state=st.booleans(),
    inner_backwards=st.booleans(),
    masked=st.booleans(),
    seed=seeds,
)
def test_bidirectional(
    merge_mode, kind, rows, steps, features, units, return_sequences, return_state, inner_backwards, masked, seed
):
    """Every merge mode with sequences, states and masks; the wrapped layer may itself go backwards."""
    rng = np.random.default_rng(seed)
    inputs, body, arrays, mask = sequence_input(masked, rows, steps, features, str(steps), rng)
    flags = {"return_sequences": return_sequences, "return_state": return_state, "go_backwards": inner_backwards}
    n_outputs = (2 if merge_mode is None else 1) + (2 * N_STATES[kind] if return_state else 0)
    outputs = [f"y{i}" for i in range(n_outputs)]
    layer = rnn_layer(kind, units, "tanh", "sigmoid", True, **flags)
    body += [f"layer bi = bidirectional({layer}, merge_mode={kd(merge_mode)})", f"{', '.join(outputs)} = bi(seq)"]
    model, weights = build(model_text(inputs, body, outputs), seed)

    forward, backward = (
        rnn_reference(kind, params(weights, f"bi/{direction}_{LAYER_NAME[kind]}"), "tanh", "sigmoid")
        for direction in ("forward", "backward")
    )
    x = embedded(weights, arrays, masked)
    if inner_backwards:
        # keras/src/layers/rnn/bidirectional.py: the forward copy keeps go_backwards=True and the backward copy
        # flips it; since go_backwards equals reversing inputs and mask, that is the plain wrapper on reversed time.
        x, mask = x[:, ::-1], None if mask is None else mask[:, ::-1]
    expected = kr.bidirectional(
        x,
        forward,
        backward,
        merge_mode=merge_mode,
        return_sequences=return_sequences,
        return_state=return_state,
        mask=mask,
    )
    assert_outputs(model.forward(*arrays), as_list(expected))


# --- masks flowing through layers -------------------------------------------------------------------------------

# A layer between the embedding and a recurrent layer, and its oracle given (x, weights, mask). Keras passes the
# embedding's mask through all of them (supports_masking, or return_sequences for recurrent layers).
MASK_PASSING: dict[str, tuple[str, Callable]] = {
    "dense": ("dense(3, activation=tanh)", lambda x, w, m: kr.dense(x, **params(w, "mid"), activation="tanh")),
    "activation": ("activation(relu)", lambda x, w, m: kr.ACTIVATIONS["relu"](x)),
    "dropout": ("dropout(0.5)", lambda x, w, m: x),
    "batch_normalization": (
        "batch_normalization()",
        lambda x, w, m: kr.batch_normalization(x, **params(w, "mid"))[0],
    ),
    "time_distributed": (
        "time_distributed(dense(3))",
        lambda x, w, m: kr.time_distributed(x, partial(kr.dense, **params(w, "mid"))),
    ),
    "lstm": (
        "lstm(3, return_sequences=true)",
        lambda x, w, m: kr.lstm(x, **params(w, "mid"), return_sequences=True, mask=m),
    ),
    "bidirectional": (
        "bidirectional(gru(2, return_sequences=true), merge_mode=concat)",
        lambda x, w, m: kr.bidirectional(
            x,
            partial(kr.gru, **params(w, "mid/forward_gru")),
            partial(kr.gru, **params(w, "mid/backward_gru")),
            return_sequences=True,
            mask=m,
        ),
    ),
}


@pytest.mark.parametrize("between", list(MASK_PASSING))
@settings(max_examples=15, deadline=None)
@given(rows=rows_, steps=steps_, seed=seeds)
def test_mask_flows_through_layers(between, rows, steps, seed):
    """The embedding's padding mask still governs a recurrent layer placed after another layer."""
    rng = np.random.default_rng(seed)
    ids = padded_ids(rows, steps, rng)
    layer, oracle = MASK_PASSING[between]
    body = [
        f"layer emb = embedding({VOCAB}, 3, mask_zero=true)",
        f"layer mid = {layer}",
        "layer last = simple_rnn(2, return_sequences=true, return_state=true)",
        "y, h = last(mid(emb(ids)))",
    ]
    model, weights = build(model_text({"ids": f"i32[batch, {steps}]"}, body, ["y", "h"]), seed)
    mask = kr.embedding_mask(ids)
    x = oracle(kr.embedding(ids, weights["emb/embeddings"]), weights, mask)
    expected = kr.simple_rnn(x, **params(weights, "last"), return_sequences=True, return_state=True, mask=mask)
    assert_outputs(model.forward(ids), expected)


MERGE_IDS = (np.array([[1, 2, 0, 0], [0, 3, 4, 0]], np.int32), np.array([[1, 2, 3, 0], [0, 0, 4, 5]], np.int32))


@pytest.mark.parametrize(
    ("merge", "keras_mask"),
    [
        # keras/src/layers/merging/base_merge.py (Merge.compute_mask): OR of the masks when every input has one.
        ("add(a, b)", lambda m1, m2: m1 | m2),
        ("multiply(a, b)", lambda m1, m2: m1 | m2),
        # ...and no mask at all when some input has none.
        ("add(a, x)", lambda m1, m2: None),
        # keras/src/layers/merging/concatenate.py (compute_mask): an unmasked input counts as all True, the masks
        # are concatenated along `axis` and reduced with any() over the last axis.
        ("concatenate(a, b)", lambda m1, m2: m1 | m2),
        ("concatenate(x, a)", lambda m1, m2: np.ones_like(m1)),
        ("concatenate(a, b, axis=1)", lambda m1, m2: np.concatenate([m1, m2], axis=1)),
    ],
)
def test_merged_masks_reach_recurrent_layer(merge, keras_mask):
    """A recurrent layer after a merge of masked sequences sees the mask Keras computes for the merge."""
    ids1, ids2 = MERGE_IDS
    x = normal(np.random.default_rng(13), 2, 4, 2)
    body = [
        f"layer emb1 = embedding({VOCAB}, 2, mask_zero=true)",
        f"layer emb2 = embedding({VOCAB}, 2, mask_zero=true)",
        "a = emb1(i)",
        "b = emb2(j)",
        "layer last = simple_rnn(2, return_sequences=true)",
        f"y = last({merge})",
    ]
    inputs = {"i": "i32[batch, 4]", "j": "i32[batch, 4]", "x": "f32[batch, 4, 2]"}
    model, weights = build(model_text(inputs, body, ["y"]), 14)
    a, b = kr.embedding(ids1, weights["emb1/embeddings"]), kr.embedding(ids2, weights["emb2/embeddings"])
    merged = {
        "add(a, b)": lambda: kr.add([a, b]),
        "multiply(a, b)": lambda: kr.multiply([a, b]),
        "add(a, x)": lambda: kr.add([a, x]),
        "concatenate(a, b)": lambda: kr.concatenate([a, b]),
        "concatenate(x, a)": lambda: kr.concatenate([x, a]),
        "concatenate(a, b, axis=1)": lambda: kr.concatenate([a, b], axis=1),
    }[merge]()
    mask = keras_mask(kr.embedding_mask(ids1), kr.embedding_mask(ids2))
    expected = kr.simple_rnn(merged, **params(weights, "last"), return_sequences=True, mask=mask)
    assert_outputs(model.forward(ids1, ids2, x), [expected])


# --- core layers ------------------------------------------------------------------------------------------------

shapes_ = st.lists(sizes, min_size=1, max_size=3)  # the non-batch dims of a rank 2..4 input


@pytest.mark.parametrize("activation", ACTIVATIONS)
@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 4), dims=shapes_, units=sizes, use_bias=st.booleans(), seed=seeds)
def test_dense(activation, batch, dims, units, use_bias, seed):
    """Dense contracts the last axis of rank 2, 3 and 4 inputs, with every activation, with and without bias."""
    layer = f"dense({units}, activation={activation}, use_bias={kd(use_bias)})"
    text = model_text({"x": f"f32[batch, {', '.join(map(str, dims))}]"}, [f"layer d = {layer}", "y = d(x)"], ["y"])
    model, weights = build(text, seed)
    x = normal(np.random.default_rng(seed), batch, *dims)
    assert_outputs(model.forward(x), [kr.dense(x, **params(weights, "d"), activation=activation)])


@FORWARD
@given(activation=st.sampled_from(ACTIVATIONS), batch=st.integers(1, 4), dims=shapes_, seed=seeds)
def test_activation_layer(activation, batch, dims, seed):
    """The activation layer applies the function elementwise (softmax and log_softmax over the last axis)."""
    text = model_text({"x": f"f32[batch, {', '.join(map(str, dims))}]"}, [f"y = activation(x, {activation})"], ["y"])
    model, _ = build(text, seed)
    x = 2 * normal(np.random.default_rng(seed), batch, *dims)
    assert_outputs(model.forward(x), [kr.ACTIVATIONS[activation](x)])


@pytest.mark.filterwarnings("ignore:divide by zero")
def test_log_softmax_stays_finite_for_large_logit_gaps():
    """Keras's log_softmax is x - logsumexp(x): a logit 800 below the largest gives about -800, not -inf."""
    text = model_text({"x": "f32[batch, 3]"}, ["y = activation(x, log_softmax)"], ["y"])
    model, _ = build(text, 0)
    x = np.array([[0.0, -800.0, 1.0]], np.float32)
    assert_outputs(model.forward(x), [kr.ACTIVATIONS["log_softmax"](x)])


@FORWARD
@given(batch=st.integers(1, 4), dims=st.lists(sizes, min_size=0, max_size=3), seed=seeds)
def test_flatten(batch, dims, seed):
    """Flatten keeps the batch axis and orders the rest in C order; a (batch,) input becomes (batch, 1)."""
    text = model_text({"x": f"f32[{', '.join(['batch', *map(str, dims)])}]"}, ["y = flatten(x)"], ["y"])
    model, _ = build(text, seed)
    x = normal(np.random.default_rng(seed), batch, *dims)
    assert_outputs(model.forward(x), [kr.flatten(x)])


@FORWARD
@given(batch=st.integers(1, 4), dims=st.lists(sizes, min_size=1, max_size=3), infer=st.booleans(), seed=seeds)
def test_reshape(batch, dims, infer, seed):
    """Reshape to the reversed non-batch dims, in C order, optionally leaving the first size to -1."""
    target = dims[::-1]
    written = [-1, *target[1:]] if infer else target
    text = model_text({"x": f"f32[batch, {', '.join(map(str, dims))}]"}, [f"y = reshape(x, {written})"], ["y"])
    model, _ = build(text, seed)
    x = normal(np.random.default_rng(seed), batch, *dims)
    assert_outputs(model.forward(x), [kr.reshape(x, target)])


@FORWARD
@given(batch=st.integers(1, 4), features=sizes, n=sizes, seed=seeds)
def test_repeat_vector(batch, features, n, seed):
    """RepeatVector inserts a time axis of n copies, n = 1 included."""
    text = model_text({"x": f"f32[batch, {features}]"}, [f"y = repeat_vector(x, {n})"], ["y"])
    model, _ = build(text, seed)
    x = normal(np.random.default_rng(seed), batch, features)
    assert_outputs(model.forward(x), [kr.repeat_vector(x, n)])


@FORWARD
@given(batch=st.integers(1, 4), dims=shapes_, rate=st.sampled_from([0.0, 0.25, 0.5, 0.9]), seed=seeds)
def test_dropout_is_identity_at_inference(batch, dims, rate, seed):
    """Keras's Dropout returns its input unchanged when not training, whatever the rate."""
    text = model_text({"x": f"f32[batch, {', '.join(map(str, dims))}]"}, [f"y = dropout(x, {rate!r})"], ["y"])
    model, _ = build(text, seed)
    x = normal(np.random.default_rng(seed), batch, *dims)
    assert_outputs(model.forward(x), [x])


@FORWARD
@given(
    batch=st.integers(1, 4),
    dims=shapes_,
    axis_choice=st.integers(0, 5),
    negative=st.booleans(),
    center=st.booleans(),
    scale=st.booleans(),
    epsilon=st.sampled_from([1e-3, 1e-2, 0.5]),
    seed=seeds,
)
def test_batch_normalization_inference(batch, dims, axis_choice, negative, center, scale, epsilon, seed):
    """Inference normalizes with the moving statistics along any feature axis, with or without gamma and beta."""
    rank = len(dims) + 1
    axis = 1 + axis_choice % (rank - 1)
    written = axis - rank if negative else axis
    layer = f"batch_normalization(axis={written}, center={kd(center)}, scale={kd(scale)}, epsilon={epsilon!r})"
    text = model_text({"x": f"f32[batch, {', '.join(map(str, dims))}]"}, [f"layer bn = {layer}", "y = bn(x)"], ["y"])
    model, weights = build(text, seed)
    p = params(weights, "bn")
    x = normal(np.random.default_rng(seed), batch, *dims)
    expected, _, _ = kr.batch_normalization(
        x,
        p.get("gamma"),
        p.get("beta"),
        p["moving_mean"],
        p["moving_variance"],
        axis=written,
        epsilon=epsilon,
        center=center,
        scale=scale,
    )
    assert_outputs(model.forward(x), [expected])


@pytest.mark.parametrize("frozen", ["layer", "wrapper"])
def test_frozen_batch_normalization_trains_as_keras_does(frozen):
    """A BatchNormalization that is not trainable normalizes with its moving statistics in training too, and leaves
    them as they are (Keras: `training and self.trainable`). A wrapper made with trainable=false freezes only the
    weights inside: its BatchNormalization is still trainable itself, as in Keras, where only the setter propagates.
    """
    layer = "batch_normalization(trainable=false)" if frozen == "layer" else "batch_normalization()"
    wrapped = f"time_distributed({layer}{', trainable=false' if frozen == 'wrapper' else ''})"
    text = model_text({"x": "f32[batch, 3, 4]"}, [f"layer bn = {wrapped}", "y = bn(x)"], ["y"])
    text += "train M { loss = mse }\n"
    model = compile_model(load(text, "t.kd").models["M"], target="numpy")
    assert model.state.trainable == []
    rng = np.random.default_rng(3)
    model.weights = [rng.uniform(0.5, 2.0, w.shape).astype(np.float32) for w in model.weights]
    p = dict(zip(["gamma", "beta", "moving_mean", "moving_variance"], [w.copy() for w in model.weights]))
    x = normal(rng, 5, 3, 4)
    model.train_step([x], [np.zeros((5, 3, 4), np.float32)])
    # TimeDistributed runs the layer once on every step folded into the batch
    y, mean, variance = kr.batch_normalization(x.reshape(15, 4), **p, training=True, trainable=frozen == "wrapper")
    assert_outputs([*model.outputs, *model.weights[2:]], [y.reshape(5, 3, 4), mean, variance])


@FORWARD
@given(
    batch=st.integers(1, 4),
    dims=st.lists(sizes, min_size=0, max_size=2),
    output_dim=sizes,
    mask_zero=st.booleans(),
    seed=seeds,
)
def test_embedding(batch, dims, output_dim, mask_zero, seed):
    """Embedding gathers rows for ids of rank 1 to 3, id 0 included; mask_zero does not change the values."""
    ids_type = f"i32[{', '.join(['batch', *map(str, dims)])}]"
    layer = f"embedding({VOCAB}, {output_dim}, mask_zero={kd(mask_zero)})"
    model, weights = build(model_text({"ids": ids_type}, [f"layer emb = {layer}", "y = emb(ids)"], ["y"]), seed)
    ids = np.random.default_rng(seed).integers(0, VOCAB, size=(batch, *dims)).astype(np.int32)
    assert_outputs(model.forward(ids), [kr.embedding(ids, weights["emb/embeddings"])])


# --- wrappers and merges ----------------------------------------------------------------------------------------

# Layers wrapped by time_distributed: `.kd` text, and the per-timestep oracle given the weights.
TIME_DISTRIBUTED: dict[str, tuple[str, Callable]] = {
    "dense": ("dense(3, activation=relu)", lambda w: partial(kr.dense, **params(w, "td"), activation="relu")),
    "dense_no_bias": ("dense(2, use_bias=false)", lambda w: partial(kr.dense, **params(w, "td"))),
    "activation": ("activation(softmax)", lambda w: kr.ACTIVATIONS["softmax"]),
    "flatten": ("flatten()", lambda w: kr.flatten),
    "dropout": ("dropout(0.3)", lambda w: lambda x: x),
    "batch_normalization": (
        "batch_normalization()",
        lambda w: lambda x: kr.batch_normalization(x, **params(w, "td"))[0],
    ),
}


@pytest.mark.parametrize("inner", list(TIME_DISTRIBUTED))
@FORWARD
@given(batch=st.integers(1, 4), steps=steps_, dims=st.lists(sizes, min_size=1, max_size=2), seed=seeds)
def test_time_distributed(inner, batch, steps, dims, seed):
    """The wrapped layer runs on each (batch, ...) timestep slice, for rank 3 and rank 4 inputs."""
    layer, oracle = TIME_DISTRIBUTED[inner]
    x_type = f"f32[batch, {steps}, {', '.join(map(str, dims))}]"
    model, weights = build(
        model_text({"x": x_type}, [f"layer td = time_distributed({layer})", "y = td(x)"], ["y"]), seed
    )
    x = normal(np.random.default_rng(seed), batch, steps, *dims)
    assert_outputs(model.forward(x), [kr.time_distributed(x, oracle(weights))])


@pytest.mark.parametrize("dims", [(4, 3), (4, 3, 2)])
def test_time_distributed_batch_normalization_channel_axis(dims):
    """Inside time_distributed, axis=1 is the step's axis 1, i.e. the outer axis 2 (keras TimeDistributed.call)."""
    text = model_text(
        {"x": f"f32[batch, {', '.join(map(str, dims))}]"},
        ["layer td = time_distributed(batch_normalization(axis=1))", "y = td(x)"],
        ["y"],
    )
    model, weights = build(text, 15)
    x = normal(np.random.default_rng(15), 2, *dims)
    expected = kr.time_distributed(x, lambda step: kr.batch_normalization(step, **params(weights, "td"), axis=1)[0])
    assert_outputs(model.forward(x), [expected])


@FORWARD
@given(
    batch=st.integers(1, 4),
    steps=steps_,
    widths=st.lists(sizes, min_size=2, max_size=3),
    axis=st.sampled_from([-1, 1, 2, -2]),
    seed=seeds,
)
def test_concatenate(batch, steps, widths, axis, seed):
    """Rank 3 inputs differing only along `axis` (the time axis for 1 and -2), two or three of them."""
    rng = np.random.default_rng(seed)
    shapes = [(steps, w) if axis in (-1, 2) else (w, steps) for w in widths]
    inputs = {f"x{i}": f"f32[batch, {a}, {b}]" for i, (a, b) in enumerate(shapes)}
    text = model_text(inputs, [f"y = concatenate({', '.join(inputs)}, axis={axis})"], ["y"])
    model, _ = build(text, seed)
    xs = [normal(rng, batch, *shape) for shape in shapes]
    assert_outputs(model.forward(*xs), [kr.concatenate(xs, axis=axis)])


@pytest.mark.parametrize("merge", ["add", "multiply"])
@FORWARD
@given(batch=st.integers(1, 4), dims=shapes_, count=st.integers(2, 4), seed=seeds)
def test_elementwise_merge(merge, batch, dims, count, seed):
    """Add and Multiply fold any number of same-shaped inputs elementwise."""
    rng = np.random.default_rng(seed)
    inputs = {f"x{i}": f"f32[batch, {', '.join(map(str, dims))}]" for i in range(count)}
    model, _ = build(model_text(inputs, [f"y = {merge}({', '.join(inputs)})"], ["y"]), seed)
    xs = [normal(rng, batch, *dims) for _ in inputs]
    assert_outputs(model.forward(*xs), [getattr(kr, merge)(xs)])


# --- PyTorch ----------------------------------------------------------------------------------------------------


def _torch_model(kind: str, batch: int, steps: int, features: int, units: int):
    """kdsl's LSTM or GRU (reset_after) with an initial state, returning its sequence and states."""
    states = ["h", "c"] if kind == "lstm" else ["h"]
    inputs = {"x": f"f32[batch, {steps}, {features}]", **{s: f"f32[batch, {units}]" for s in states}}
    outputs = ["y", *(f"out_{s}" for s in states)]
    layer = f"{kind}({units}, return_sequences=true, return_state=true)"
    body = [f"layer recurrent = {layer}", f"{', '.join(outputs)} = recurrent(x, initial_state=[{', '.join(states)}])"]
    model, weights = build(model_text(inputs, body, outputs), 16)
    rng = np.random.default_rng(17)
    arrays = [normal(rng, batch, steps, features), *(normal(rng, batch, units) for _ in states)]
    return model, params(weights, "recurrent"), arrays


def test_lstm_matches_torch():
    """An independent implementation: torch.nn.LSTM shares Keras's gate order i, f, c(g), o."""
    torch = pytest.importorskip("torch")
    batch, steps, features, units = 3, 5, 4, 3
    model, p, (x, h0, c0) = _torch_model("lstm", batch, steps, features, units)
    module = torch.nn.LSTM(features, units, batch_first=True)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(p["kernel"].T.copy()))
        module.weight_hh_l0.copy_(torch.from_numpy(p["recurrent_kernel"].T.copy()))
        module.bias_ih_l0.copy_(torch.from_numpy(p["bias"]))
        module.bias_hh_l0.zero_()
        out, (h, c) = module(torch.from_numpy(x), (torch.from_numpy(h0[None]), torch.from_numpy(c0[None])))
    assert_outputs(model.forward(x, h0, c0), [out.numpy(), h[0].numpy(), c[0].numpy()])


def test_gru_matches_torch():
    """torch.nn.GRU is Keras's reset_after=True GRU with gates reordered from z, r, h to r, z, n."""
    torch = pytest.importorskip("torch")
    batch, steps, features, units = 3, 5, 4, 3
    model, p, (x, h0) = _torch_model("gru", batch, steps, features, units)
    perm = np.concatenate([np.arange(units, 2 * units), np.arange(units), np.arange(2 * units, 3 * units)])
    module = torch.nn.GRU(features, units, batch_first=True)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(p["kernel"][:, perm].T.copy()))
        module.weight_hh_l0.copy_(torch.from_numpy(p["recurrent_kernel"][:, perm].T.copy()))
        module.bias_ih_l0.copy_(torch.from_numpy(p["bias"][0, perm]))
        module.bias_hh_l0.copy_(torch.from_numpy(p["bias"][1, perm]))
        out, h = module(torch.from_numpy(x), torch.from_numpy(h0[None]))
    assert_outputs(model.forward(x, h0), [out.numpy(), h[0].numpy()])
