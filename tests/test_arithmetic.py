"""Arithmetic on tensors: `.kd` expressions and `kdsl.ops` / tensor operators, against NumPy in float64."""

from __future__ import annotations

import numpy as np
import pytest
from gradients import worst_gradient_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kdsl
from kdsl.errors import KdslArgumentError, KdslError
from kdsl.explain import explain
from kdsl.lang import load
from kdsl.pipeline import compile_programs

RTOL, ATOL = 1e-5, 1e-5
EVERY_FUNCTION = """model M(x: f32[batch, 4], c: f32[batch, 1]) -> y {
    f = sigmoid(x)
    y = f * x + (1 - f) * tanh(c) - maximum(x, 0.5) / sqrt(abs(x) + 1) + softmax(x) - minimum(exp(c), 2)
        + log(square(x) + 1) + relu(-x) - -x * -2 + divide(x, abs(c) + 1)
}"""


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def every_function(x, c):
    f = sigmoid(x)
    return (f * x + (1 - f) * np.tanh(c) - np.maximum(x, 0.5) / np.sqrt(np.abs(x) + 1) + softmax(x)
            - np.minimum(np.exp(c), 2) + np.log(np.square(x) + 1) + np.maximum(-x, 0) - (-x) * -2
            + x / (np.abs(c) + 1))  # fmt: skip


def structure(graph) -> list:
    """Each node's layer (name, kind, configuration) and the nodes its inputs come from."""
    made_by = {id(v): n.layer.name for n in graph.nodes for v in n.outputs}
    return [
        (n.layer.name, n.layer.kind.name, n.layer.config, [made_by.get(id(v), "input") for v in n.inputs])
        for n in graph.nodes
    ]


def predict(model: kdsl.Model, inputs: list[np.ndarray]) -> np.ndarray:
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    return model.predict([x.astype(np.float32) for x in inputs], verbose=0)


def arrays(*shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=shape) for shape in shapes]


def test_kd_expressions_compute_numpys_values():
    x, c = arrays((3, 4), (3, 1))
    model = kdsl.Model.from_graph(load(EVERY_FUNCTION).model())
    np.testing.assert_allclose(predict(model, [x, c]), every_function(x, c), rtol=RTOL, atol=ATOL)


def test_python_operators_and_ops_build_the_kd_graph():
    x, c = kdsl.Input(shape=(4,), name="x"), kdsl.Input(shape=(1,), name="c")
    ops = kdsl.ops
    f = ops.sigmoid(x)
    y = (f * x + (1 - f) * ops.tanh(c) - ops.maximum(x, 0.5) / ops.sqrt(ops.abs(x) + 1) + ops.softmax(x)
         - ops.minimum(ops.exp(c), 2) + ops.log(ops.square(x) + 1) + ops.relu(-x) - -x * -2
         + ops.divide(x, ops.absolute(c) + np.float32(1)))  # fmt: skip
    model = kdsl.Model([x, c], y, name="M")
    from_text = kdsl.Model.from_graph(load(EVERY_FUNCTION).model())
    assert structure(model.graph) == structure(from_text.graph)
    values = arrays((2, 4), (2, 1), seed=1)
    np.testing.assert_allclose(predict(model, values), every_function(*values), rtol=RTOL, atol=ATOL)


def test_residual_connection_and_keras_op_names():
    text = """model M(h: f32[batch, 8]) -> y {
        y = dense(h, 8) + h
    }"""
    model = kdsl.Model.from_graph(load(text).model())
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    kernel, bias = model.get_weights()
    (h,) = arrays((5, 8))
    np.testing.assert_allclose(predict(model, [h]), h @ kernel + bias + h, rtol=RTOL, atol=ATOL)
    lines = []
    model.summary(print_fn=lines.append)
    row = next(line for line in "\n".join(lines).splitlines() if "(Add)" in line)
    assert "add (Add)" in row and "(None, 8)" in row and " 0 " in row and "dense[0][0], h[0][0]" in row
    # Keras's `Functional.layers` lists layers only: an operation is a node of the graph, not a layer
    assert [layer.name for layer in model.layers] == ["h", "dense"]
    with pytest.raises(KdslArgumentError, match="no layer named 'add'"):
        model.get_layer("add")


GRADIENT_MODEL = """model M(x: f32[batch, 3], c: f32[batch, 1]) -> y {
    a = dense(x, 4, activation=tanh)
    b = dense(c, 1)
    f = sigmoid(a)
    y = f * a + (1 - f) * b - maximum(a, b) / sqrt(square(a) + 1) + minimum(a, 0.2) * exp(b / 4)
        + log(abs(a) + 2) - softmax(a) * relu(-a) - -b
}
train M { loss = mse }"""


def test_gradients_match_finite_differences():
    training = compile_programs(load(GRADIENT_MODEL, "t.kd").models["M"], target="numpy").training
    assert worst_gradient_error(training, np.random.default_rng(0), batch=3, samples=4) < 1e-4


# --- hypothesis: random expression trees ---------------------------------------------------------------------------

UNARY = {
    "tanh": np.tanh,
    "sigmoid": sigmoid,
    "relu": lambda x: np.maximum(x, 0),
    "abs": np.abs,
    "square": np.square,
    "-": np.negative,
    "exp(tanh({}))": lambda x: np.exp(np.tanh(x)),
    "sqrt(abs({}) + 1)": lambda x: np.sqrt(np.abs(x) + 1),
    "log(abs({}) + 1)": lambda x: np.log(np.abs(x) + 1),
}
BINARY = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/ (abs({}) + 1)": lambda x, y: x / (np.abs(y) + 1),
    "minimum": np.minimum,
    "maximum": np.maximum,
}


@st.composite
def operands(draw, names: list[str], depth: int):
    """A tensor expression, or now and then a number (`.kd` text, a function of the inputs' arrays)."""
    if draw(st.integers(0, 4)) == 0:
        number = draw(st.sampled_from([0.5, 2, 3.0, 1]))
        return str(number), lambda env: number
    return draw(expressions(names, depth))


@st.composite
def expressions(draw, names: list[str], depth: int = 3):
    """A random tensor expression over `names`: (`.kd` text, a function of the inputs' arrays computing it)."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        name = draw(st.sampled_from(names))
        return name, lambda env: env[name]
    if draw(st.booleans()):
        op = draw(st.sampled_from(sorted(UNARY)))
        text, fn = draw(expressions(names, depth - 1))
        written = f"-({text})" if op == "-" else op.format(text) if "{}" in op else f"{op}({text})"
        return written, lambda env: UNARY[op](fn(env))
    op = draw(st.sampled_from(sorted(BINARY)))
    tensor_left = draw(st.booleans())
    (left, f) = draw(expressions(names, depth - 1) if tensor_left else operands(names, depth - 1))
    (right, g) = draw(operands(names, depth - 1) if tensor_left else expressions(names, depth - 1))
    if op in ("minimum", "maximum"):
        written = f"{op}({left}, {right})"
    elif "{}" in op:  # numbers drawn are positive: abs(n) + 1 is n + 1
        written = f"({left}) / ({right} + 1)" if right[0].isdigit() else f"({left}) {op.format(right)}"
    else:
        written = f"({left}) {op} ({right})"
    return written, lambda env: BINARY[op](f(env), g(env))


@st.composite
def broadcast_shapes(draw):
    """1 to 3 per-sample shapes that broadcast together: each axis that of a common shape, or 1. (Their ranks are
    equal: the batch axis leads every one, and NumPy aligns axes on the right.)"""
    full = draw(st.lists(st.integers(2, 4), min_size=1, max_size=3))
    return [tuple(draw(st.sampled_from([size, 1])) for size in full) for _ in range(draw(st.integers(1, 3)))]


@given(st.data())
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_expressions_broadcast_and_compute_as_numpy(data):
    shapes = data.draw(broadcast_shapes())
    names = [f"x{i}" for i in range(len(shapes))]
    text, fn = data.draw(expressions(names))
    signature = ", ".join(f"{n}: f32[batch, {', '.join(map(str, s))}]" for n, s in zip(names, shapes))
    used = [n for n in names if n in text]
    model_text = f"model M({signature}) -> y {{\n    y = {text} + 0 * ({' + '.join(used)})\n}}"
    graph = load(model_text).model()
    values = arrays(*((2, *s) for s in shapes), seed=len(text))
    env = dict(zip(names, values))
    want = fn(env) + 0 * sum(env[n] for n in used)
    assert graph.outputs[0].type.dims == ("batch", *want.shape[1:])
    model = kdsl.Model.from_graph(graph)
    np.testing.assert_allclose(predict(model, values), want, rtol=1e-4, atol=1e-4)
    assert load(model.to_kd()).model().outputs[0].type == graph.outputs[0].type


@given(st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_gradients_of_random_expressions_match_finite_differences(data):
    text, _ = data.draw(expressions(["a", "b"]))
    model_text = f"""model M(x: f32[batch, 3]) -> y {{
    a = dense(x, 3)
    b = dense(x, 1)
    y = {text} + 0 * (a + b)
}}
train M {{ loss = mse }}"""
    training = compile_programs(load(model_text, "t.kd").models["M"], target="numpy").training
    assert worst_gradient_error(training, np.random.default_rng(len(text)), batch=2, samples=2) < 1e-4


def test_compiled_expression_fuses_with_the_layer_before_it():
    text = """model M(x: f32[batch, 8]) -> y {
        h = dense(x, 8)
        y = dense(tanh(h) * 2.0 + h - 1, 4)
    }"""
    report = explain(compile_programs(load(text).model(), "cpu", training=False), batch=8)
    assert "fused loop over (batch, 8): add, tanh, mul, add, sub" in report


# --- errors ----------------------------------------------------------------------------------------------------------


def error_of(text: str) -> KdslError:
    with pytest.raises(KdslError) as caught:
        load(text, "m.kd")
    return caught.value


def test_shape_mismatch_points_at_the_operator():
    error = error_of("model M(a: f32[batch, 3], b: f32[batch, 4]) -> y {\n    y = dense(a, 3) *   b\n}")
    assert (error.span.line, error.span.column) == (2, 21)
    assert "cannot broadcast shapes (None, 3) and (None, 4)" in str(error)
    assert "^" in str(error) and "aligned on the right" in str(error)


def test_unknown_function_and_wrong_arity_are_errors_with_a_place():
    error = error_of("model M(a: f32[batch, 3]) -> y {\n    y = tanhh(a) + a\n}")
    assert (error.span.line, error.span.column) == (2, 9) and "unknown layer `tanhh`" in str(error)
    assert "tanh" in str(error.hint)
    error = error_of("model M(a: f32[batch, 3]) -> y {\n    y = minimum(a)\n}")
    assert (error.span.line, error.span.column, error.message) == (2, 9, "`minimum` takes 2 tensor(s), got 1")
    error = error_of("model M(a: f32[batch, 3]) -> y {\n    y = tanh(a, axis=1)\n}")
    assert (error.span.line, error.span.column, error.message) == (2, 17, "`tanh` takes no `axis`")
    error = error_of("model M(a: f32[batch, 3]) -> y {\n    y = a * (1 / (2 - 2))\n}")  # numbers alone: as in Python
    assert (error.span.line, error.span.column, error.message) == (2, 16, "division by zero")
    error = error_of("model M(a: f32[batch, 3]) -> y {\n    y = a + zz\n}")
    assert "unknown tensor `zz`" in str(error) and (error.span.line, error.span.column) == (2, 13)


def test_settings_may_be_computed_from_numbers():
    graph = load("model M(a: f32[batch, 3]) -> y {\n    y = dense(a, 2 * 8 - 4)\n}").model()
    assert graph.outputs[0].type.dims == ("batch", 12)


# --- printing back, saving --------------------------------------------------------------------------------------------


def test_to_kd_prints_text_that_parses_to_the_same_graph():
    graph = load(EVERY_FUNCTION).model()
    text = kdsl.Model.from_graph(graph).to_kd()
    again = load(text).model()
    assert structure(again) == structure(graph)
    assert kdsl.Model.from_graph(again).to_kd() == text
    assert "f * x + (1.0 - f) * tanh(c)" in text  # written as arithmetic, in one statement


def test_kdz_round_trip(tmp_path):
    text = """model M(h: f32[batch, 6]) -> y {
        y = dense(h, 6, activation=tanh) * 0.5 + h
    }"""
    model = kdsl.Model.from_graph(load(text).model())
    (h,) = arrays((4, 6))
    before = predict(model, [h])
    model.save(tmp_path / "m.kdz")
    loaded = kdsl.load_model(tmp_path / "m.kdz")
    assert loaded.to_kd() == model.to_kd()
    np.testing.assert_allclose(predict(loaded, [h]), before, rtol=1e-6, atol=1e-6)


def test_functions_take_a_piped_tensor():
    text = "model M(x: f32[batch, 4]) -> y {\n    y = x |> tanh |> maximum(0.5) |> softmax\n}"
    (x,) = arrays((3, 4))
    model = kdsl.Model.from_graph(load(text).model())
    np.testing.assert_allclose(predict(model, [x]), softmax(np.maximum(np.tanh(x), 0.5)), rtol=RTOL, atol=ATOL)
    error = error_of("model M(x: f32[batch, 4]) -> y {\n    y = x |> dense(4) + x\n}")
    assert "binds loosest" in str(error.hint)


def test_python_operands_are_checked():
    x = kdsl.Input(shape=(3,))
    with pytest.raises(KdslError, match="cannot broadcast shapes"):
        x * kdsl.Input(shape=(4,))
    with pytest.raises(KdslError, match="takes tensors of the model and numbers, got str"):
        x + "1"
    with pytest.raises(KdslError, match="`softmax` over axis 1 is not supported"):
        kdsl.ops.softmax(x, axis=1)
    with pytest.raises(KdslError, match="needs a tensor among its operands, got only numbers"):
        kdsl.ops.add(1, 2)


def test_compiled_cpu_training_step_equals_the_interpreter():
    text = GRADIENT_MODEL.replace("loss = mse", "loss = mse  optimizer = sgd(0.1)")
    x, c = (a.astype(np.float32) for a in arrays((6, 3), (6, 1), seed=3))
    target = np.random.default_rng(4).normal(size=(6, 4)).astype(np.float32)
    results = []
    for where in ("numpy", "cpu"):
        model = kdsl.Model.from_graph(load(text).model())
        model.compile(optimizer="sgd", loss="mse", target=where, seed=1)
        loss = model.train_on_batch([x, c], target)
        results.append((loss, model.predict([x, c], verbose=0), model.get_weights()))
    (loss_a, out_a, w_a), (loss_b, out_b, w_b) = results
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-5)
    np.testing.assert_allclose(out_b, out_a, rtol=1e-4, atol=1e-5)
    for a, b in zip(w_a, w_b, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_keras_files_refuse_operations(tmp_path):
    model = kdsl.Model.from_graph(load("model M(h: f32[batch, 3]) -> y {\n    y = dense(h, 3) + h\n}").model())
    with pytest.raises(KdslError, match=r"a `.keras` file cannot hold the operation `add` \(Add\)"):
        model.save(tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()


def test_nested_models_with_operations_print_back():
    text = """model Inner(x: f32[batch, 4]) -> y { y = x * 2 + dense(x, 4) }
model Outer(a: f32[batch, 4]) -> z {
    z = Inner(a) - Inner(tanh(a))
}"""
    graph = load(text).model()
    printed = kdsl.Model.from_graph(graph).to_kd()
    assert structure(load(printed).model()) == structure(graph)
    (a,) = arrays((3, 4))
    model = kdsl.Model.from_graph(graph)
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    kernel, bias = model.get_weights()
    inner = lambda x: x * 2 + x @ kernel + bias  # noqa: E731
    np.testing.assert_allclose(predict(model, [a]), inner(a) - inner(np.tanh(a)), rtol=RTOL, atol=ATOL)


def test_printed_tensor_names_never_hide_a_setting():
    x = kdsl.Input(shape=(3,), name="x")
    h = kdsl.ops.relu(x)
    y = kdsl.layers.Dense(3, activation="relu")(h * 2)
    model = kdsl.Model(x, [y, h], name="M")
    text = model.to_kd()
    assert "relu = relu(x)" in text and "activation=relu" in text  # the output keeps its name, Keras's
    assert structure(load(text).model()) == structure(model.graph)
    t = kdsl.ops.tanh(x)
    other = kdsl.Model(x, kdsl.layers.Dense(3, activation="tanh")(t * 2 + t), name="N").to_kd()
    assert "tanh_1 = tanh(x)" in other  # a tensor that is not an output takes a name no function has
