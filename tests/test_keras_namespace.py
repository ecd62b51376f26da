"""Keras code runs with `import kdsl as keras`: the namespaces, objects and functional forms it uses."""

from __future__ import annotations

import numpy as np
import pytest

import kdsl as keras
from kdsl.errors import KdslArgumentError
from kdsl.layers import Add, Concatenate, Multiply


def test_functional_merge_forms_build_the_layers():
    a, b = keras.Input(shape=(3,)), keras.Input(shape=(3,))
    for function, cls in ((keras.layers.concatenate, Concatenate), (keras.layers.add, Add),
                          (keras.layers.multiply, Multiply)):  # fmt: skip
        model = keras.models.Model([a, b], function([a, b]))
        assert [type(layer.kind) for layer in model.graph.layers()] == [type(cls.kind)]
    assert keras.models.Sequential is keras.Sequential and keras.models.load_model is keras.load_model


def test_loss_and_metric_objects_compile_as_their_names():
    x = keras.Input(shape=(4,))
    model = keras.Model(x, keras.layers.Dense(3)(x))
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=[keras.metrics.SparseCategoricalAccuracy()], target="numpy")  # fmt: skip
    logs = model.evaluate(np.ones((4, 4), np.float32), np.zeros(4, np.int32), return_dict=True)
    assert set(logs) == {"loss", "sparse_categorical_accuracy"}
    logits = model.predict(np.ones((1, 4), np.float32))[0].astype(np.float64)
    expected = np.log(np.exp(logits).sum()) - logits[0]  # crossentropy from logits, label 0
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.losses.MeanSquaredError(reduction="sum"),
        lambda: keras.losses.BinaryCrossentropy(axis=1),
        lambda: keras.metrics.BinaryAccuracy(threshold=0.7),
    ],
)
def test_loss_and_metric_arguments_kdsl_lacks_are_refused(make):
    with pytest.raises(KdslArgumentError):
        make()


def test_to_categorical_follows_keras():
    """keras/src/utils/numerical_utils.py: a trailing axis of 1 dropped, classes = max + 1 by default."""
    np.testing.assert_array_equal(keras.utils.to_categorical([[1], [0], [2]]), np.eye(3)[[1, 0, 2]])
    assert keras.utils.to_categorical(np.zeros((2, 5), int), num_classes=4).shape == (2, 5, 4)
    with pytest.raises(KdslArgumentError, match=r"\[0, 2\)"):
        keras.utils.to_categorical([0, 3], num_classes=2)


def _two_outputs():
    x = keras.Input(shape=(4,), name="x")
    model = keras.Model(x, [keras.layers.Dense(3, activation="softmax", name="cls")(x), keras.layers.Dense(1)(x)])
    rng = np.random.default_rng(1)
    data = rng.normal(size=(8, 4)).astype(np.float32), [np.arange(8) % 3, rng.normal(size=(8, 1)).astype(np.float32)]
    return model, data


def test_several_outputs_log_each_loss_and_evaluate_lists_them_as_keras():
    """Keras 3 logs each output's loss before its weight (`cls_loss`) and evaluate lists
    [loss, *output losses, *metrics by output]."""
    model, (x, (ids, values)) = _two_outputs()
    model.compile(optimizer="sgd", loss=["sparse_categorical_crossentropy", "mse"], metrics=[["accuracy"], ["mae"]],
                  loss_weights=[1.0, 0.5], target="numpy")  # fmt: skip
    probs, predicted = (p.astype(np.float64) for p in model.predict(x))
    crossentropy = -np.log(probs[np.arange(8), ids]).mean()
    squared = np.square(values - predicted).mean()
    accuracy = np.mean(probs.argmax(-1) == ids)
    absolute = np.abs(values - predicted).mean()
    expected = [crossentropy + 0.5 * squared, crossentropy, squared, accuracy, absolute]
    np.testing.assert_allclose(model.evaluate(x, [ids, values], batch_size=8), expected, rtol=1e-5)
    history = model.fit(x, [ids, values], batch_size=8, verbose=0)
    assert list(history.history) == ["loss", "cls_loss", "dense_loss", "cls_accuracy", "dense_mae"]
    np.testing.assert_allclose([v[0] for v in history.history.values()], expected, rtol=1e-5)


def test_a_flat_metrics_list_for_several_outputs_is_refused_as_keras_refuses_it():
    model, _ = _two_outputs()
    with pytest.raises(KdslArgumentError, match="a list per output or a dict"):
        model.compile(optimizer="sgd", loss="mse", metrics=["mae"])


@pytest.mark.parametrize("cell, layer", [("LSTMCell", "LSTM"), ("GRUCell", "GRU"), ("SimpleRNNCell", "SimpleRNN")])
def test_rnn_of_a_cell_trains_as_the_layer_and_compiles_to_its_time_loop(cell, layer):
    """RNN(LSTMCell(n)) given an LSTM model's weights and trained one epoch on the same batches ends with the same
    weights; its time loop is the layer's fused one."""
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(24, 6, 3)).astype(np.float32), np.arange(24) % 2

    def model(recurrent):
        inputs = keras.Input(shape=(6, 3))
        built = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(recurrent(inputs)))
        built.compile(optimizer="adam", loss="sparse_categorical_crossentropy", target="cpu")
        return built

    plain = model(getattr(keras.layers, layer)(5, dropout=0.0))
    generic = model(keras.layers.RNN(getattr(keras.layers, cell)(5)))
    generic.set_weights(plain.get_weights())
    for built in (plain, generic):
        built.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for expected, actual in zip(plain.get_weights(), generic.get_weights(), strict=True):
        np.testing.assert_array_equal(expected, actual)
    assert generic.get_layer("rnn").get_weights()[0].shape == (3, plain.get_weights()[0].shape[1])
    from kdsl.explain import explain
    from kdsl.pipeline import compile_programs

    report = explain(compile_programs(generic.graph, "cpu", training=False), batch=8)
    assert f"rnn ({layer})" in report and "one compiled time loop" in report


def test_rnn_refuses_what_is_not_a_cell():
    with pytest.raises(KdslArgumentError, match="SimpleRNNCell, LSTMCell, GRUCell, a layer of your own"):
        keras.layers.RNN(object())


@pytest.mark.parametrize(
    "name, arguments",
    [("mean_squared_error", {}), ("mean_absolute_error", {}), ("binary_crossentropy", {"label_smoothing": 0.1}),
     ("categorical_crossentropy", {"from_logits": True}), ("sparse_categorical_crossentropy", {})],
)  # fmt: skip
def test_loss_functions_compute_keras_per_sample_losses_and_compile_as_their_names(name, arguments):
    import keras_reference as kr

    rng = np.random.default_rng(4)
    y_pred = rng.uniform(0.05, 0.95, (5, 4)).astype(np.float32)
    if name == "sparse_categorical_crossentropy":
        y_pred /= y_pred.sum(-1, keepdims=True)
        y_true = rng.integers(0, 4, 5)
    elif name == "categorical_crossentropy":
        y_true = np.eye(4)[rng.integers(0, 4, 5)]
    else:
        y_true = rng.uniform(0, 1, (5, 4))
    function = getattr(keras.losses, name)
    expected = getattr(kr, name)(y_true, y_pred, **arguments)
    np.testing.assert_allclose(function(y_true, y_pred, **arguments), expected, rtol=1e-5, atol=1e-6)
    x = keras.Input(shape=(4,))
    model = keras.Model(x, keras.layers.Dense(4)(x))
    model.compile(optimizer="sgd", loss=function, target="numpy")
    assert model.trainer.losses[0].loss.name == name


def test_regularizers_are_keras_s_names_and_check_their_factors():
    """`keras.regularizers.L2(0.1)` / `l2`, `L1`, `L1L2` (zeros unless given, as Keras's), each validated."""
    regularizers = keras.regularizers
    assert (regularizers.l1, regularizers.l2, regularizers.l1_l2) == (
        regularizers.L1,
        regularizers.L2,
        regularizers.L1L2,
    )
    assert regularizers.L1L2(l2=0.1).args == {"l1": 0.0, "l2": 0.1}
    assert regularizers.L2().args == {"l2": 0.01}
    with pytest.raises(KdslArgumentError, match="expected a number ≥ 0"):
        regularizers.L2(-0.1)
    x = keras.Input(shape=(3,))
    model = keras.Model(x, keras.layers.Dense(2, kernel_regularizer=regularizers.L1(0.2))(x))
    assert "l1(l1=0.2)" in model.to_kd()
