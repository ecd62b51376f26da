"""Recurrent cells written in `.kd` (`cell NAME(...) (x, h: ...) -> h { ... }`) run by `rnn`: against the built-in
LSTM and GRU, the float64 Keras RNN loop of keras_reference over the cell's own equations, finite differences,
the CPU backend, and the errors, printing and summary."""

from __future__ import annotations

import keras_reference as kr
import numpy as np
import pytest
from gradients import worst_gradient_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kdsl
from kdsl.errors import KdslArgumentError, KdslNameError, KdslShapeError, KdslUnsupportedError
from kdsl.lang import format, load
from kdsl.pipeline import compile_model, compile_programs
from kdsl.summary import summary

RTOL, ATOL = 1e-5, 1e-6

CELLS = """
cell MyLSTM(units) (x, h: f32[batch, units], c: f32[batch, units]) -> h {
    i = sigmoid(dense(x, units) + dense(h, units, use_bias=false))
    f = sigmoid(dense(x, units) + dense(h, units, use_bias=false))
    g = tanh(dense(x, units) + dense(h, units, use_bias=false))
    o = sigmoid(dense(x, units) + dense(h, units, use_bias=false))
    c = f * c + i * g
    h = o * tanh(c)
}

cell MyGRU(units) (x, h: f32[batch, units]) -> h {
    z = sigmoid(dense(x, units) + dense(h, units))
    r = sigmoid(dense(x, units) + dense(h, units))
    h = z * h + (1 - z) * tanh(dense(x, units) + r * dense(h, units))
}

cell MinimalGRU(units) (x, h: f32[batch, units]) -> h {
    f = dense(concatenate(x, h), units, activation=sigmoid)
    c = dense(x, units, activation=tanh)
    h = f * h + (1 - f) * c
}

# two states, and an output that is neither (of another width)
cell Readout(units, outputs) (x, h: f32[batch, units], s: f32[batch, units]) -> y {
    h = tanh(dense(x, units) + dense(h, units, use_bias=false) - 0.5 * s)
    s = s + h
    y = dense(h * s, outputs)
}
"""


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def minimal_gru(kernel_f, bias_f, kernel_c, bias_c) -> kr.ReferenceCell:
    """MinimalGRU's equations, one step."""

    def step(x, states):
        (h,) = states
        f = sigmoid(np.concatenate([x, h], axis=-1) @ kernel_f + bias_f)
        h = f * h + (1 - f) * np.tanh(x @ kernel_c + bias_c)
        return h, [h]

    return step, [bias_f.shape[0]]


def readout(kernel_x, bias_x, kernel_h, kernel_y, bias_y) -> kr.ReferenceCell:
    """Readout's equations, one step."""

    def step(x, states):
        h, s = states
        h = np.tanh(x @ kernel_x + bias_x + h @ kernel_h - 0.5 * s)
        s = s + h
        return (h * s) @ kernel_y + bias_y, [h, s]

    return step, [bias_x.shape[0]] * 2


REFERENCES = {"MinimalGRU": minimal_gru, "Readout": readout}


def model_of(body: str, inputs: str, outputs: str = "y", train: bool = False):
    text = f"{CELLS}\nmodel M({inputs}) -> {outputs} {{\n    {body}\n}}\n"
    if train:
        text += "train M { loss = mse  optimizer = sgd() }\n"
    return load(text, "cells.kd").models["M"]


def random_weights(model, seed: int = 0, scale: float = 0.5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    model.weights = [(rng.standard_normal(w.shape) * scale).astype(np.float32) for w in model.weights]
    return model.weights


def normal(*shape, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def assert_all_close(got, want, rtol=RTOL, atol=ATOL):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


# --- the built-in LSTM and GRU, written as cells ----------------------------------------------------------------------


def _lstm_weights(kernel, recurrent_kernel, bias, units):
    """The built-in LSTM's weights as MyLSTM's: per gate (i, f, c, o) the input dense's kernel and bias, then the
    state dense's kernel."""
    weights = []
    for gate in range(4):
        columns = slice(gate * units, (gate + 1) * units)
        weights += [kernel[:, columns], bias[columns], recurrent_kernel[:, columns]]
    return weights


def _gru_weights(kernel, recurrent_kernel, bias, units):
    """The built-in GRU's (reset_after) weights as MyGRU's: per gate (z, r, h) the input dense's kernel and bias,
    then the state dense's kernel and bias."""
    weights = []
    for gate in range(3):
        columns = slice(gate * units, (gate + 1) * units)
        weights += [kernel[:, columns], bias[0, columns], recurrent_kernel[:, columns], bias[1, columns]]
    return weights


@pytest.mark.parametrize(
    "builtin, cell, to_cell",
    [("lstm(seq, 4", "MyLSTM(4)", _lstm_weights), ("gru(seq, 4, reset_after=true", "MyGRU(4)", _gru_weights)],
    ids=["lstm", "gru"],
)
def test_cells_written_out_give_the_builtin_layers_outputs_and_gradients(builtin, cell, to_cell):
    inputs = "seq: f32[batch, 5, 3]"
    layer = compile_model(model_of(f"y = {builtin}, return_sequences=true)", inputs, train=True), target="numpy")
    custom = compile_model(model_of(f"y = rnn(seq, {cell}, return_sequences=true)", inputs, train=True), "numpy")
    kernel, recurrent_kernel, bias = random_weights(layer)
    custom.weights = [w.copy() for w in to_cell(kernel, recurrent_kernel, bias, 4)]
    assert [p.split("/", 1)[1] for p in custom.param_names[:3]] == ["dense/kernel", "dense/bias", "dense_1/kernel"]
    seq, target = normal(2, 5, 3), normal(2, 5, 4, seed=2)
    assert_all_close(custom.forward(seq), layer.forward(seq))
    assert custom.train_step([seq], [target]) == pytest.approx(layer.train_step([seq], [target]), rel=1e-6)
    assert_all_close(custom.grads, to_cell(*layer.grads, 4))


# --- every option of `rnn`, against the Keras loop over the cell's own equations --------------------------------------


def reference_layer(cell: str, weights, **options):
    """The float64 Keras RNN loop over the cell's equations (one cell: `stacked_rnn` of one is `RNN(cell)`)."""
    name, _ = cell.split("(")
    return lambda x, **more: kr.stacked_rnn(x, [REFERENCES[name](*weights)], **options, **more)


OPTIONS = [
    ("", {}),
    ("return_sequences=true", {"return_sequences": True}),
    ("return_state=true", {"return_state": True}),
    ("go_backwards=true, return_sequences=true", {"go_backwards": True, "return_sequences": True}),
    ("go_backwards=true, return_state=true", {"go_backwards": True, "return_state": True}),
]


@pytest.mark.parametrize("cell", ["MinimalGRU(4)", "Readout(4, 2)"])
@pytest.mark.parametrize("written, options", OPTIONS, ids=[o or "plain" for o, _ in OPTIONS])
def test_return_sequences_state_and_go_backwards(cell, written, options):
    states = 1 if cell.startswith("Minimal") else 2
    outputs = "(y, " + ", ".join(f"s{i}" for i in range(states)) + ")" if "return_state" in written else "y"
    targets = outputs.strip("()")
    model = compile_model(model_of(f"{targets} = rnn(seq, {cell}, {written})", "seq: f32[batch, 5, 3]", outputs),
                          target="numpy", training=False)  # fmt: skip
    weights = random_weights(model)
    seq = normal(3, 5, 3)
    want = reference_layer(cell, weights, **options)(seq)
    assert_all_close(model.forward(seq), want if isinstance(want, list) else [want])


@pytest.mark.parametrize("cell", ["MinimalGRU(4)", "Readout(4, 2)"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_masks_and_initial_states(cell, go_backwards):
    """A masked step keeps the states and repeats the last output; with initial states, the output carried into
    leading masked steps starts at zeros, as Keras's."""
    states = 1 if cell.startswith("Minimal") else 2
    names = [f"h{i}" for i in range(states)]
    inputs = "ids: i32[batch, 5], " + ", ".join(f"{n}: f32[batch, 4]" for n in names)
    written = f"return_sequences=true, go_backwards={str(go_backwards).lower()}, initial_state=[{', '.join(names)}]"
    body = f"e = embedding(ids, 6, 3, mask_zero=true)\n    y = rnn(e, {cell}, {written})"
    model = compile_model(model_of(body, inputs), target="numpy", training=False)
    embeddings, *weights = random_weights(model)
    ids = np.array([[1, 2, 3, 0, 0], [0, 0, 4, 5, 1], [0, 0, 0, 0, 0]], dtype=np.int32)
    initial = [normal(3, 4, seed=3 + i) for i in range(states)]
    x = kr.embedding(ids, embeddings)
    want = reference_layer(cell, weights, return_sequences=True, go_backwards=go_backwards)(
        x, mask=kr.embedding_mask(ids), initial_state=initial
    )
    (got,) = model.forward(ids, *initial)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_with_a_mask(return_sequences):
    written = f"return_sequences={str(return_sequences).lower()}"
    body = f"e = embedding(ids, 6, 3, mask_zero=true)\n    y = bidirectional(e, rnn(Readout(4, 2), {written}))"
    model = compile_model(model_of(body, "ids: i32[batch, 5]"), target="numpy", training=False)
    embeddings, *weights = random_weights(model)
    assert [name.split("/", 2)[1] for name in model.param_names[1:]] == ["forward_rnn"] * 5 + ["backward_rnn"] * 5
    ids = np.array([[1, 2, 3, 0, 0], [4, 5, 1, 2, 3]], dtype=np.int32)
    forward, backward = (reference_layer("Readout(", part) for part in (weights[:5], weights[5:]))
    want = kr.bidirectional(
        kr.embedding(ids, embeddings), forward, backward, return_sequences=return_sequences, mask=kr.embedding_mask(ids)
    )
    (got,) = model.forward(ids)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_a_declared_rnn_is_one_layer_with_one_set_of_weights():
    body = "layer r = rnn(MinimalGRU(4))\n    y = r(a) + r(b)"
    graph = model_of(body, "a: f32[batch, 5, 3], b: f32[batch, 2, 3]")
    model = compile_model(graph, target="numpy", training=False)
    weights = random_weights(model)
    assert model.param_names == ["r/dense/kernel", "r/dense/bias", "r/dense_1/kernel", "r/dense_1/bias"]
    a, b = normal(2, 5, 3), normal(2, 2, 3, seed=4)
    layer = reference_layer("MinimalGRU(", weights)
    np.testing.assert_allclose(model.forward(a, b)[0], layer(a) + layer(b), rtol=RTOL, atol=ATOL)


# --- gradients --------------------------------------------------------------------------------------------------------


@st.composite
def step_expression(draw, states: list[str], depth: int) -> str:
    """A random width-3 expression of one step: states, dense layers, + - * tanh and sigmoid."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from([*states, "dense(x, 3)", *(f"dense({s}, 3, use_bias=false)" for s in states)]))
    if draw(st.booleans()):
        inner = draw(step_expression(states, depth - 1))
        return draw(st.sampled_from(["tanh({})", "sigmoid({})", "dense({}, 3)"])).format(inner)
    left, right = draw(step_expression(states, depth - 1)), draw(step_expression(states, depth - 1))
    return f"({left}) {draw(st.sampled_from('+-*'))} ({right})"


@st.composite
def random_cells(draw) -> str:
    states = [f"h{i}" for i in range(draw(st.integers(1, 3)))]
    declared = ", ".join(f"{s}: f32[batch, 3]" for s in states)
    body = "\n".join(f"    {s} = tanh({draw(step_expression(states, 3))})" for s in states)
    return f"cell Random() (x, {declared}) -> h0 {{\n{body}\n}}\n", len(states)


@given(cell=random_cells(), go_backwards=st.booleans())
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gradients_of_random_cells_match_finite_differences(cell, go_backwards):
    """Initial states are inputs, drawn in float64 (zeros would start as float32 in the interpreter, which a step
    of states and products alone would keep: too coarse for finite differences)."""
    cell, states = cell
    initial = [f"i{k}" for k in range(states)]
    text = cell + (
        f"model M(seq: f32[batch, 3, 2], {', '.join(f'{i}: f32[batch, 3]' for i in initial)}) -> y {{\n"
        f"    y = rnn(seq, Random(), return_sequences=true, go_backwards={str(go_backwards).lower()}, "
        f"initial_state=[{', '.join(initial)}])\n"
        "}\ntrain M { loss = mse }\n"
    )
    training = compile_programs(load(text, "random.kd").models["M"], target="numpy").training
    assert worst_gradient_error(training, np.random.default_rng(0), batch=2, samples=3) < 1e-4


# --- the CPU backend --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def minimal_gru_models():
    """MinimalGRU over embedded, masked ids, on the NumPy interpreter and compiled by Numba, the same weights."""
    body = "e = embedding(ids, 6, 3, mask_zero=true)\n    y = rnn(e, MinimalGRU(4), return_sequences=true) |> dense(2)"
    graph = model_of(body, "ids: i32[batch, time]", train=True)
    reference = compile_model(graph, target="numpy")
    compiled = compile_model(graph, target="cpu", parallel=False)
    compiled.weights = [w.copy() for w in random_weights(reference)]
    return reference, compiled


def test_cpu_backend_computes_as_the_interpreter(minimal_gru_models):
    reference, compiled = minimal_gru_models
    ids = np.array([[1, 2, 3, 0, 0], [0, 4, 5, 1, 2], [0, 0, 0, 0, 0]], dtype=np.int32)
    assert_all_close(compiled.forward(ids), reference.forward(ids), rtol=1e-5, atol=1e-6)
    target = normal(3, 5, 2)
    assert compiled.train_step([ids], [target]) == pytest.approx(reference.train_step([ids], [target]), rel=1e-5)
    assert_all_close(compiled.grads, reference.grads, rtol=1e-4, atol=1e-6)


def test_fit_lowers_the_loss():
    body = "e = embedding(ids, 6, 3, mask_zero=true)\n    y = rnn(e, MinimalGRU(4), return_sequences=true) |> dense(2)"
    model = kdsl.Model.from_graph(model_of(body, "ids: i32[batch, time]", train=True))
    model.compile(optimizer=kdsl.optimizers.Adam(0.05), loss="mse", target="cpu", seed=3)
    rng = np.random.default_rng(5)
    ids = rng.integers(1, 6, (16, 5)).astype(np.int32)
    target = np.stack([np.cumsum(ids == 1, axis=1), np.cumsum(ids == 2, axis=1)], axis=-1).astype(np.float32) / 5
    losses = model.fit(ids, target, batch_size=8, epochs=8, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0]


# --- errors -----------------------------------------------------------------------------------------------------------

GRU_CELL = "cell MinimalGRU(units) (x, h: f32[batch, units]) -> h {\n    h = dense(concatenate(x, h), units) * h\n}\n"


def _model(line: str) -> str:
    return f"model M(s: f32[batch, 5, 3]) -> y {{\n    {line}\n}}\n"


# fmt: off
ERRORS = {
    "unknown cell": (
        GRU_CELL + _model("y = rnn(s, MinimalGUR(4))"), KdslNameError, r"unknown cell `MinimalGUR`", (5, 16),
        "did you mean `MinimalGRU`?",
    ),
    "too many arguments": (
        GRU_CELL + _model("y = rnn(s, MinimalGRU(4, 5))"), KdslArgumentError,
        r"cell `MinimalGRU\(units\)` takes 1 parameter\(s\), got 2", (5, 16), None,
    ),
    "too few arguments": (
        GRU_CELL + _model("y = rnn(s, MinimalGRU())"), KdslArgumentError, r"takes 1 parameter\(s\), got 0", (5, 16),
        "give `units` too",
    ),
    "unknown parameter": (
        GRU_CELL + _model("y = rnn(s, MinimalGRU(unit=4))"), KdslArgumentError, r"has no parameter `unit`", (5, 27),
        "did you mean `units`?",
    ),
    "new state of another shape": (
        "cell C(units) (x, h: f32[batch, units]) -> h {\n    h = dense(x, 3)\n}\n" + _model("y = rnn(s, C(4))"),
        KdslShapeError, r"state `h` is \(None, 4\) but its new value is \(None, 3\)", (2, 5), None,
    ),
    "state never assigned": (
        "cell C(units) (x, h: f32[batch, units], c: f32[batch, units]) -> h {\n    h = dense(x, units)\n}\n"
        + _model("y = rnn(s, C(4))"), KdslNameError, r"state `c` of cell `C` is never given a new value", (1, 41),
        "`c = ...`",
    ),
    "cell calling itself": (
        "cell C(units) (x, h: f32[batch, units]) -> h {\n    h = C(units)\n}\n" + _model("y = rnn(s, C(4))"),
        KdslArgumentError, r"cell `C` calls itself", (2, 9), None,
    ),
    "cell calling a model": (
        "model N(a: f32[batch, 4]) -> b {\n    b = dense(a, 4)\n}\n"
        "cell C(units) (x, h: f32[batch, units]) -> h {\n    h = N(h)\n}\n" + _model("y = rnn(s, C(4))"),
        KdslArgumentError, r"cell `C` calls model `N`", (5, 9), None,
    ),
    "cell as a layer's input": (
        GRU_CELL + _model("y = dense(MinimalGRU(4), 3)"), KdslArgumentError,
        r"cell `MinimalGRU` is one step of a recurrent layer, not a tensor", (5, 15), "rnn(seq, MinimalGRU(...))",
    ),
    "cell as a value": (
        GRU_CELL + _model("y = MinimalGRU(4)"), KdslArgumentError, r"not a tensor or a layer", (5, 9), None,
    ),
    "cell in arithmetic": (
        GRU_CELL + _model("y = rnn(s, MinimalGRU(4)) + MinimalGRU(4)"), KdslArgumentError, r"not a tensor or a layer",
        (5, 33), None,
    ),
    "recurrent layer in a cell": (
        "cell C(units) (x, h: f32[batch, units]) -> h {\n    h = lstm(x, units)\n}\n" + _model("y = rnn(s, C(4))"),
        KdslUnsupportedError, r"`lstm` cannot be called inside cell `C`", (2, 9), None,
    ),
    "dropout in a cell": (
        "cell C(units) (x, h: f32[batch, units]) -> h {\n    h = x |> dropout(0.5) |> dense(units)\n}\n"
        + _model("y = rnn(s, C(4))"), KdslUnsupportedError, r"`dropout` cannot be called inside cell `C`", (2, 14),
        "apply it to the sequence",
    ),
    "weight outside a cell": (
        "model M(s: f32[batch, 4]) -> y {\n    w = weight([4, 4])\n    y = dense(s, 2)\n}\n", KdslUnsupportedError,
        r"`weight` outside a cell", (2, 9), "belongs to a `cell`",
    ),
    "matmul by a tensor of the batch": (
        "cell C(units) (x, h: f32[batch, units]) -> h {\n    h = matmul(h, h)\n}\n" + _model("y = rnn(s, C(4))"),
        KdslShapeError, r"`matmul` multiplies \(\.\.\., k\) by a weight \(k, n\)", (2, 9), None,
    ),
    "not a cell": (_model("y = rnn(s, 4)"), KdslArgumentError, r"`rnn` argument `cell`: expected a cell", (2, 16),
                   None),
    "no state": (
        "cell C() (x) -> x {\n}\n" + _model("y = rnn(s, C())"), KdslArgumentError, r"cell `C` has no state", (1, 11),
        None,
    ),
}
# fmt: on


@pytest.mark.parametrize("text, error, message, where, hint", ERRORS.values(), ids=ERRORS)
def test_errors_point_at_the_text(text, error, message, where, hint):
    with pytest.raises(error, match=message) as raised:
        load(text, "bad.kd")
    assert (raised.value.span.line, raised.value.span.column) == where
    assert hint is None or hint in raised.value.hint


# --- printing and summary ---------------------------------------------------------------------------------------------


def test_printed_models_parse_back_to_the_same_model():
    body = (
        "e = embedding(ids, 6, 3, mask_zero=true)\n"
        "    layer shared = rnn(MinimalGRU(units=4), return_sequences=true)\n"
        "    a = bidirectional(shared(e), rnn(Readout(4, outputs=2), go_backwards=true), merge_mode=sum)\n"
        "    y, h, c = rnn(e, MyLSTM(3), return_state=true, initial_state=[h0, c0])\n"
        "    z = a + dense(y, 2)"
    )
    graph = model_of(body, "ids: i32[batch, 5], h0: f32[batch, 3], c0: f32[batch, 3]", "(z, h, c)", train=True)
    text = format.to_kd(graph)
    assert text.count("cell ") == 3 and "MyGRU" not in text  # the cells the model runs, each once
    assert "shared = rnn(e, MinimalGRU(units=4), return_sequences=true, name=shared)" in text
    again = load(text, "printed.kd").model("M")
    assert again == graph
    assert format.to_kd(again) == text


def test_summary_counts_the_cells_weights():
    graph = model_of("h = rnn(seq, MinimalGRU(32))\n    y = dense(h, 10, activation=softmax)", "seq: f32[batch, 5, 8]")
    layer = graph.nodes[0].layer
    assert [(p.name, p.shape) for p in layer.params] == [
        ("dense/kernel", (40, 32)), ("dense/bias", (32,)), ("dense_1/kernel", (8, 32)), ("dense_1/bias", (32,)),
    ]  # fmt: skip
    cell_weights = 40 * 32 + 32 + 8 * 32 + 32
    assert graph.param_count() == cell_weights + 32 * 10 + 10
    row = next(line for line in summary(graph).splitlines() if "rnn (RNN)" in line)
    assert "(None, 32)" in row and f"{cell_weights:,}" in row


def test_kdz_archives_keep_the_cell_and_keras_files_refuse_it(tmp_path):
    model = kdsl.Model.from_graph(model_of("y = rnn(seq, MinimalGRU(4))", "seq: f32[batch, 5, 3]"))
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    rng = np.random.default_rng(0)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()])
    model.save(tmp_path / "m.kdz")
    loaded = kdsl.models.load_model(tmp_path / "m.kdz")
    seq = normal(2, 5, 3)
    np.testing.assert_allclose(loaded.predict(seq, verbose=0), model.predict(seq, verbose=0), rtol=RTOL, atol=ATOL)
    with pytest.raises(KdslUnsupportedError, match=r"cell `MinimalGRU` cannot be written into a `\.keras` file"):
        model.save(tmp_path / "m.keras")


PEEPHOLE = """
cell PeepholeLSTM(units) (x, h: f32[batch, units], c: f32[batch, units]) -> h {
    peep_i = weight([units])
    peep_f = weight([units])
    peep_o = weight([units])
    i = sigmoid(dense(concatenate(x, h), units) + peep_i * c)
    f = sigmoid(dense(concatenate(x, h), units) + peep_f * c)
    g = tanh(dense(concatenate(x, h), units))
    c = f * c + i * g
    o = sigmoid(dense(concatenate(x, h), units) + peep_o * c)
    h = o * tanh(c)
}
model M(seq: f32[batch, 5, 3]) -> y {
    y = rnn(seq, PeepholeLSTM(4), return_sequences=true)
}
train M { loss = mse  optimizer = sgd() }
"""


def test_a_peephole_lstm_with_weights_of_its_own_against_its_equations():
    """Weights a cell holds itself (`weight([units])`, peepholes read elementwise), on the CPU backend, against a
    float64 loop over the same equations; its gradients against the interpreter's."""
    graph = load(PEEPHOLE, "peephole.kd").models["M"]
    compiled, reference = compile_model(graph, target="cpu"), compile_model(graph, target="numpy")
    assert compiled.param_names[:3] == ["rnn/weight", "rnn/weight_1", "rnn/weight_2"]
    weights = random_weights(compiled)
    reference.weights = [w.copy() for w in weights]
    p_i, p_f, p_o, k_i, b_i, k_f, b_f, k_g, b_g, k_o, b_o = (w.astype(np.float64) for w in weights)
    seq = normal(2, 5, 3)
    h, c, outputs = np.zeros((2, 4)), np.zeros((2, 4)), []
    for t in range(5):
        xh = np.concatenate([seq[:, t], h], axis=1)
        i, f = sigmoid(xh @ k_i + b_i + p_i * c), sigmoid(xh @ k_f + b_f + p_f * c)
        c = f * c + i * np.tanh(xh @ k_g + b_g)
        h = sigmoid(xh @ k_o + b_o + p_o * c) * np.tanh(c)
        outputs.append(h)
    assert_all_close(compiled.forward(seq), [np.stack(outputs, axis=1)])
    target = normal(2, 5, 4, seed=3)
    assert compiled.train_step([seq], [target]) == pytest.approx(reference.train_step([seq], [target]), rel=1e-5)
    assert_all_close(compiled.grads, reference.grads, rtol=1e-4, atol=1e-6)
