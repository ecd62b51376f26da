"""A `.kd` model calling another model of its file: the same nested graph the Python API builds, printed back by
`to_kd`, saved and loaded as `.kdz`, and every mistake in such a call reported where it was written."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kdsl
from kdsl import callbacks
from kdsl import layers as L
from kdsl.cli import main
from kdsl.errors import KdslArgumentError, KdslError, KdslNameError, KdslShapeError, KdslUnsupportedError
from kdsl.ir.graph import Nested, NestedCall
from kdsl.lang import load
from kdsl.lang.format import to_kd

RNG = np.random.default_rng(0)

AUTOENCODER = """\
model AutoEncoder(input_layer: f32[batch, 8]) -> dense_2 {
    dense_2 = input_layer |> Encoder |> Decoder |> dense(2)
}

model Encoder(input_layer: f32[batch, 8]) -> dense {
    dense = dense(input_layer, 3)
}

model Decoder(input_layer: f32[batch, 3]) -> dense_1 {
    h = dense(input_layer, 4)
    dense_1 = dense(h, 8)
}
"""

SIAMESE = """\
model tower(input_layer: f32[batch, 4]) -> embed {
    embed = dense(input_layer, 3, name=embed)
}

model siamese(a: f32[batch, 4], b: f32[batch, 4]) -> out {
    left = tower(a)
    proj = dense(tower(b), 3, name=proj)
    out = dense(concatenate(left, proj), 1, name=out)
}
"""

TWO_OUTPUTS = """\
model two(input_layer: f32[batch, 4]) -> (p, q) {
    h = dense(input_layer, 4, name=h)
    p = dense(h, 2, name=p)
    q = dense(h, 3, name=q)
}

model uses_two(input_layer: f32[batch, 4]) -> out {
    first, second = two(input_layer)
    out = dense(concatenate(second, first), 1, name=out)
}
"""


def _autoencoder():
    """A Sequential of two Sequentials and a Dense: the outer Dense is named after the inner models' layers."""
    encoder = kdsl.Sequential([kdsl.Input(shape=(8,)), L.Dense(3)], name="Encoder")
    decoder = kdsl.Sequential([kdsl.Input(shape=(3,)), L.Dense(4), L.Dense(8)], name="Decoder")
    return kdsl.Sequential([encoder, decoder, L.Dense(2)], name="AutoEncoder")


def _siamese():
    i = kdsl.Input(shape=(4,))
    tower = kdsl.Model(i, L.Dense(3, name="embed")(i), name="tower")
    a, b = kdsl.Input(shape=(4,), name="a"), kdsl.Input(shape=(4,), name="b")
    out = L.Dense(1, name="out")(L.concatenate([tower(a), L.Dense(3, name="proj")(tower(b))]))
    return kdsl.Model([a, b], out, name="siamese")


def _two_outputs():
    i = kdsl.Input(shape=(4,))
    h = L.Dense(4, name="h")(i)
    two = kdsl.Model(i, [L.Dense(2, name="p")(h), L.Dense(3, name="q")(h)], name="two")
    x = kdsl.Input(shape=(4,))
    first, second = two(x)
    return kdsl.Model(x, L.Dense(1, name="out")(L.concatenate([second, first])), name="uses_two")


CASES = [(AUTOENCODER, _autoencoder, 1), (SIAMESE, _siamese, 2), (TWO_OUTPUTS, _two_outputs, 1)]
IDS = ["sequential_of_sequentials", "siamese", "two_outputs"]


def _inputs(model):
    xs = [RNG.random((3, *v.type.dims[1:]), dtype=np.float32) for v in model.graph.inputs]
    return xs[0] if len(xs) == 1 else xs


def _shapes(weights):
    return [w.shape for w in weights]


@pytest.mark.parametrize(("text", "build", "calls"), CASES, ids=IDS)
def test_kd_text_elaborates_to_the_graph_the_python_api_builds(text, build, calls):
    python = build()
    graph = load(text).model()
    assert graph.name == python.name
    assert graph == python.graph
    assert [layer.name for layer in graph.layers()] == [layer.name for layer in python.graph.layers()]
    nested = [step for step in graph.calls() if isinstance(step, NestedCall)]
    python_nested = [step for step in python.graph.calls() if isinstance(step, NestedCall)]
    assert len({id(step.layer) for step in nested}) == len({id(step.layer) for step in python_nested})
    assert len([step for step in nested if step.layer is nested[0].layer]) == calls
    from_kd = kdsl.Model.from_graph(graph)
    assert [layer.name for layer in from_kd.layers] == [
        layer.name for layer in kdsl.Model.from_graph(python.graph).layers
    ]
    assert _shapes(from_kd.get_weights()) == _shapes(python.get_weights())
    assert from_kd.state.names == python.state.names


def test_the_outer_layers_are_named_after_the_nested_ones_and_summary_shows_one_row_each():
    graph = load(AUTOENCODER).model()
    assert [layer.name for layer in graph.layers()] == ["Encoder/dense", "Decoder/dense", "Decoder/dense_1", "dense_2"]
    lines = []
    kdsl.Model.from_graph(graph).summary(print_fn=lines.append)
    assert "Encoder (Functional)" in lines[0] and "Decoder (Functional)" in lines[0]
    assert "dense_1 (Dense)" not in lines[0]


@pytest.mark.parametrize(("text", "build", "calls"), CASES, ids=IDS)
def test_to_kd_prints_the_nested_models_first_and_loads_back_equal(text, build, calls):
    python = build()
    printed = python.to_kd()
    program = load(printed)
    assert list(program.models)[-1] == python.name
    assert program.model() == python.graph
    nested = [op.name for op in python.graph.top_layers() if isinstance(op, Nested)]
    assert all(printed.index(f"model {name}(") < printed.index(f"model {python.name}(") for name in nested)
    from_kd = load(text).model()
    assert load(to_kd(from_kd)).model() == from_kd


def test_keras_default_names_print_and_load_back():
    inner = kdsl.Sequential([kdsl.Input(shape=(4,)), L.Dense(3)])
    middle = kdsl.Sequential([inner, L.Dense(2)])
    x = kdsl.Input(shape=(4,))
    outer = kdsl.Model(x, L.Dense(1)(middle(x)))
    printed = outer.to_kd()
    assert [name for name in load(printed).models] == [inner.name, middle.name, outer.name]
    assert load(printed).models[outer.name] == outer.graph
    assert printed.count(f"model {inner.name}(") == 1  # each model once, before the model that calls it


@pytest.mark.parametrize(("text", "build", "calls"), CASES, ids=IDS)
def test_kdz_round_trip_gives_the_same_predictions_weights_and_layers(tmp_path, text, build, calls):
    model = build()
    model.compile("sgd", "mse", target="numpy")
    model.save(tmp_path / "m.kdz")
    back = kdsl.load_model(tmp_path / "m.kdz")
    x = _inputs(model)
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert back.state.names == model.state.names
    for mine, its in zip(back.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(mine, its)
    entries = [layer for layer in back.layers if isinstance(layer, kdsl.Model)]
    assert [entry.name for entry in entries] == [m.name for m in model.layers if isinstance(m, kdsl.Model)]
    before = back.predict(x, verbose=0)
    entries[0].set_weights([np.zeros_like(w) for w in entries[0].get_weights()])  # shared with the outer model
    assert not np.allclose(back.predict(x, verbose=0), before)


def test_a_kd_nested_model_trains_saves_and_loads(tmp_path):
    path = tmp_path / "ae.kd"
    path.write_text(AUTOENCODER)
    model = kdsl.load_model_file(path)
    assert model.name == "AutoEncoder"
    model.compile("sgd", "mse", target="numpy")
    x, y = RNG.random((8, 8), dtype=np.float32), RNG.random((8, 2), dtype=np.float32)
    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "ae-{epoch}.kdz"))
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[checkpoint])
    back = kdsl.load_model(tmp_path / "ae-2.kdz")
    np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    encoder = back.get_layer("Encoder")
    np.testing.assert_array_equal(encoder.get_weights()[0], model.get_weights()[0])


def test_the_cli_picks_the_model_no_other_calls(tmp_path, capsys):
    path = tmp_path / "ae.kd"
    path.write_text(AUTOENCODER)
    assert main(["summary", str(path)]) == 0
    assert 'Model: "AutoEncoder"' in capsys.readouterr().out
    assert main(["summary", str(path), "--model", "Decoder"]) == 0
    assert 'Model: "Decoder"' in capsys.readouterr().out
    assert main(["compile", str(path), "--emit", "kd"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("model Encoder(") == 1 and load(printed).model() == load(AUTOENCODER).model()
    path.write_text(AUTOENCODER + "\nmodel Other(x: f32[batch, 2]) -> y { y = dense(x, 1) }\n")
    with pytest.raises(KdslNameError, match="defines 4 models; say which one"):
        load(path.read_text()).model()


# --- errors -----------------------------------------------------------------------------------------------------

INNER = "model Inner(x: f32[batch, 4]) -> y { y = dense(x, 2) }\n"


def _assert_refused(text: str, kind: type[KdslError], needle: str, message: str, hint: str = "") -> None:
    """Loading `text` fails with `kind` at the first `needle` in the last model, mentioning `message` and `hint`."""
    with pytest.raises(KdslError) as info:
        load(text)
    error = info.value
    index = text.index(needle, text.rindex("model "))
    at = (text.count("\n", 0, index) + 1, index - text.rfind("\n", 0, index))
    assert type(error) is kind, str(error)
    assert (error.span.line, error.span.column) == at, str(error)
    assert message in error.message and hint in (error.hint or ""), str(error)


def test_an_unknown_model_suggests_a_close_one():
    text = INNER + "model Outer(x: f32[batch, 4]) -> y {\n    y = Inne(x)\n}\n"
    _assert_refused(text, KdslNameError, "Inne", "unknown layer or model `Inne`", "did you mean `Inner`?")


def test_a_call_with_the_wrong_number_of_inputs():
    text = INNER + "model Outer(x: f32[batch, 4]) -> y {\n    y = Inner(x, x)\n}\n"
    _assert_refused(text, KdslArgumentError, "Inner(x, x)", "model `Inner` takes 1 input(s), got 2", "x: f32[batch, 4]")


@pytest.mark.parametrize(("given", "got"), [("f32[batch, 5]", "(None, 5) f32"), ("i32[batch, 4]", "(None, 4) i32")])
def test_a_call_on_an_input_of_another_shape_or_dtype(given, got):
    text = INNER + f"model Outer(x: {given}) -> y {{\n    y = Inner(x)\n}}\n"
    _assert_refused(
        text, KdslShapeError, "Inner(x)", f"model `Inner` expects input `x` of shape (None, 4) f32, got {got}"
    )


def test_a_model_calling_itself_directly_or_through_others():
    text = "model Loop(x: f32[batch, 4]) -> y {\n    h = dense(x, 4)\n    y = Loop(h)\n}\n"
    _assert_refused(
        text, KdslArgumentError, "Loop(h)", "model `Loop` calls itself (Loop -> Loop)", "do not call it back"
    )
    text = (
        "model A(x: f32[batch, 4]) -> y { y = B(x) }\n"
        "model B(x: f32[batch, 4]) -> y { y = C(x) }\n"
        "model C(x: f32[batch, 4]) -> y {\n    y = A(x)\n}\n"
    )
    _assert_refused(text, KdslArgumentError, "A(x)", "model `A` calls itself (A -> B -> C -> A)")


def test_a_model_call_takes_no_keywords():
    text = INNER + "model Outer(x: f32[batch, 4]) -> y {\n    y = Inner(x, training=true)\n}\n"
    _assert_refused(text, KdslArgumentError, "training=true", "model `Inner` takes only its inputs, not `training=`")


def test_a_model_named_like_a_layer_cannot_be_called():
    text = "model Dense(x: f32[batch, 4]) -> y { y = dense(x, 2) }\nmodel Outer(x: f32[batch, 4]) -> y {\n"
    text += "    y = Dense(x)\n}\n"
    _assert_refused(text, KdslNameError, "Dense(x)", "both a model of this file and a layer", "rename the model")
    assert load(text.split("model Outer")[0]).model().name == "Dense"  # defining it alone is fine


def test_a_model_python_cannot_call_by_name_in_kd_is_refused_by_to_kd():
    i = kdsl.Input(shape=(4,))
    inner = kdsl.Model(i, L.Dense(2)(i), name="dense")
    x = kdsl.Input(shape=(4,))
    with pytest.raises(KdslUnsupportedError, match="nested model 'dense' needs a name"):
        to_kd(kdsl.Model(x, inner(x), name="outer").graph)


# --- a property ---------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=1, max_size=4), st.booleans())
def test_a_chain_of_nested_models_prints_back_equal(widths, twice):
    """Each model calls the one before (twice when `twice`, adding the two calls) and adds a Dense of its own."""
    lines = ["model M0(x: f32[batch, 3]) -> y { y = dense(x, 3) }"]
    for level, width in enumerate(widths, 1):
        call = f"add(M{level - 1}(x), M{level - 1}(x))" if twice else f"M{level - 1}(x)"
        lines.append(f"model M{level}(x: f32[batch, 3]) -> y {{ y = dense({call}, {width}) |> dense(3) }}")
    graph = load("\n".join(lines)).model()
    assert graph.name == f"M{len(widths)}"
    again = load(to_kd(graph)).model()
    assert again == graph
    assert [layer.name for layer in again.layers()] == [layer.name for layer in graph.layers()]
