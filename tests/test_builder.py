"""The Python builder API: Keras-style layers give the same IR as `.kd` text."""

from __future__ import annotations

import numpy as np
import pytest

import kdsl
from kdsl import layers as L
from kdsl.errors import KdslArgumentError, KdslShapeError, KdslUnsupportedError
from kdsl.lang import load


def test_sequential_equals_the_kd_pipeline(examples):
    model = kdsl.Sequential(
        [
            kdsl.Input(shape=(28, 28), name="image"),
            L.Flatten(),
            L.Dense(300, activation="relu"),
            L.Dense(100, activation="relu"),
            L.Dense(10, activation="softmax"),
        ],
        name="FashionMLP",
    )
    from_file = kdsl.load_model_file(examples / "fashion_mlp.kd")
    assert model.count_params() == from_file.count_params() == 266_610
    assert model.graph.layers()[1].params[0].shape == (784, 300)
    assert [layer.name for layer in model.graph.layers()] == [layer.name for layer in from_file.graph.layers()]
    assert model.graph.outputs[0].type == from_file.graph.outputs[0].type


def test_functional_model_matches_the_headline_example(examples):
    words = kdsl.Input(shape=(100,), dtype="int32", name="words")
    extra = kdsl.Input(shape=(5,), name="extra")
    encoder = L.LSTM(32, name="encoder")
    code = encoder(L.Embedding(10000, 512)(words))
    aux = L.Dense(1, activation="sigmoid")(code)
    x = L.Concatenate()([code, extra])
    x = L.Dense(64, activation="relu")(x)
    x = L.Dense(64, activation="relu")(x)
    main = L.Dense(1, activation="sigmoid")(x)
    model = kdsl.Model([words, extra], [main, aux], name="Headline")
    expected = kdsl.load_model_file(examples / "headline.kd").graph
    assert model.count_params() == expected.param_count() == 5_196_450
    assert [(layer.name, layer.kind.name) for layer in model.graph.layers()] == [
        (layer.name, layer.kind.name) for layer in expected.layers()
    ]


def test_keras_tensor_reports_keras_shapes():
    x = kdsl.Input(shape=(None, 8))
    out, h, c = L.LSTM(4, return_sequences=True, return_state=True)(x)
    assert x.shape == (None, "d1", 8)
    assert out.shape == (None, "d1", 4) and h.shape == (None, 4) and c.shape == (None, 4)
    assert out.dtype == "float32"


def test_shared_layer_keeps_one_set_of_weights_and_prints_as_a_declaration():
    a, b = kdsl.Input(shape=(6,), name="a"), kdsl.Input(shape=(6,), name="b")
    shared = L.Dense(3)
    model = kdsl.Model([a, b], L.Add()([shared(a), shared(b)]))
    assert model.count_params() == 6 * 3 + 3
    text = model.to_kd()
    assert "layer dense_layer = dense(3, name=dense)" in text
    assert load(text).model() == model.graph


def test_shared_layer_on_a_different_width_is_refused():
    shared = L.Dense(3)
    shared(kdsl.Input(shape=(6,)))
    with pytest.raises(KdslShapeError, match="shared layer"):
        shared(kdsl.Input(shape=(7,)))


def test_shapes_are_checked_at_the_call():
    with pytest.raises(KdslShapeError, match=r"\(None, 4\) and \(None, 5\)"):
        L.Add()([kdsl.Input(shape=(4,)), kdsl.Input(shape=(5,))])
    with pytest.raises(KdslShapeError, match="rank-3"):
        L.LSTM(3)(kdsl.Input(shape=(4,)))
    with pytest.raises(KdslShapeError, match="i32 token ids"):
        L.Embedding(10, 3)(kdsl.Input(shape=(4,)))


def test_arguments_are_checked_like_keras():
    with pytest.raises(KdslArgumentError, match="did you mean `units`"):
        L.Dense(unit=3)
    with pytest.raises(KdslArgumentError, match="unknown activation"):
        L.Dense(3, activation="rleu")
    with pytest.raises(KdslUnsupportedError, match="unroll"):
        L.LSTM(3, unroll=True)
    with pytest.raises(KdslArgumentError, match="fraction"):
        L.Dropout(1.5)
    with pytest.raises(KdslArgumentError, match="recurrent layer"):
        L.Bidirectional(L.Dense(3))
    assert L.Dense(3).config["activation"] == "linear"
    assert L.GRU(3).config["reset_after"] is True


def test_sequential_layers_give_one_output():
    with pytest.raises(KdslArgumentError, match="gives 3 outputs"):
        kdsl.Sequential([kdsl.Input(shape=(2, 3)), L.LSTM(3, return_state=True)])


def test_model_refuses_outputs_from_inputs_it_was_not_given():
    a, b = kdsl.Input(shape=(3,)), kdsl.Input(shape=(3,))
    with pytest.raises(KdslArgumentError, match="not among the model's inputs"):
        kdsl.Model(a, L.Add()([a, b]))


def test_input_validation():
    with pytest.raises(KdslArgumentError, match="batch_size"):
        kdsl.Input(shape=(3,), batch_size=0)
    with pytest.raises(KdslArgumentError):
        kdsl.Input(shape=(0,))
    with pytest.raises(KdslArgumentError):
        kdsl.Input(shape=(3,), dtype="float16")


def test_summary_through_print_fn():
    model = kdsl.Sequential([kdsl.Input(shape=(4,)), L.Dense(2)])
    lines: list[str] = []
    model.summary(print_fn=lines.append)
    assert "Total params: 10 (40.00 B)" in lines[0]


def _two_dense(wrap: bool = False):
    inputs = kdsl.Input(shape=(3, 4))
    first = L.TimeDistributed(L.Dense(5)) if wrap else L.Dense(5)
    model = kdsl.Model(inputs, L.Dense(2)(first(inputs)))
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    return model, first


def _changed_after_one_step(model) -> list[bool]:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(6, 3, 4)).astype(np.float32), rng.normal(size=(6, 3, 2)).astype(np.float32)
    before = model.get_weights()
    model.train_on_batch(x, y)
    return [not np.array_equal(old, new) for old, new in zip(before, model.get_weights())]


@pytest.mark.parametrize("wrap", [False, True])
def test_trainable_set_after_building_freezes_at_the_next_compile(wrap):
    """As in Keras: `layer.trainable = False` (on a wrapper: on the layer it holds too) takes effect at compile()."""
    model, first = _two_dense(wrap)
    first.trainable = False
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    assert _changed_after_one_step(model) == [False, False, True, True]
    first.trainable = True
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    assert _changed_after_one_step(model) == [True, True, True, True]


def test_trainable_set_after_compile_says_it_waits_for_compile():
    model, first = _two_dense()
    first.trainable = False
    with pytest.warns(UserWarning, match="next compile"):
        assert _changed_after_one_step(model) == [True, True, True, True]  # as Keras: not until compile()


@pytest.mark.parametrize("first", ["input_dim", "input_shape", "data"])
def test_sequential_takes_its_input_as_keras_does(first):
    """From the first layer's input_dim or input_shape, or (with neither) from the first data fit is given, after
    a compile() that waits for it."""
    model = kdsl.Sequential()
    shape = {"input_dim": {"input_dim": 4}, "input_shape": {"input_shape": (4,)}, "data": {}}[first]
    model.add(L.Dense(8, activation="relu", **shape))
    model.add(L.Dense(3, activation="softmax"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    history = model.fit(x, np.arange(16) % 3, epochs=2, verbose=0)
    assert [w.shape for w in model.get_weights()] == [(4, 8), (8,), (8, 3), (3,)]
    assert len(history.history["loss"]) == 2 and isinstance(history.history["accuracy"][0], float)


def test_a_sequential_model_without_input_says_how_to_give_one():
    model = kdsl.Sequential([L.Dense(2)])
    with pytest.raises(KdslArgumentError, match="no input shape yet"):
        model.summary()
