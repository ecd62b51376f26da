"""Keras's `RNN` over a list of cells: numbers against the float64 per-step oracle, weights, names, training,
saving, and what is refused."""

from __future__ import annotations

import keras_reference as kr
import numpy as np
import pytest

import kdsl as keras
from kdsl.errors import KdslArgumentError, KdslShapeError, KdslUnsupportedError
from kdsl.lang import load

L = keras.layers
RTOL, ATOL = 1e-5, 5e-6
REFERENCE_CELLS = {L.LSTMCell: kr.lstm_cell, L.GRUCell: kr.gru_cell, L.SimpleRNNCell: kr.simple_rnn_cell}


def _random_weights(model: keras.Model, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    weights = [rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(weights)
    return weights


def _reference_cells(cell_types, weights: list[np.ndarray]) -> list[kr.ReferenceCell]:
    """Each cell's oracle from its kernel, recurrent kernel and bias, in that order."""
    return [REFERENCE_CELLS[t](*weights[3 * i : 3 * i + 3]) for i, t in enumerate(cell_types)]


CELL_STACKS = [(L.LSTMCell, L.GRUCell), (L.SimpleRNNCell, L.LSTMCell, L.GRUCell)]


@pytest.mark.parametrize("cell_types", CELL_STACKS, ids=["lstm-gru", "simple-lstm-gru"])
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_outputs_and_states_match_per_step_stacking(cell_types, return_sequences, go_backwards):
    """The output is the last cell's; with return_state every cell's states follow, one list per cell."""
    inputs = keras.Input(shape=(4, 3))
    cells = [t(units) for t, units in zip(cell_types, (5, 4, 2))]
    output, *states = L.RNN(cells, return_sequences=return_sequences, return_state=True, go_backwards=go_backwards)(
        inputs
    )
    assert [len(group) for group in states] == [2 if t is L.LSTMCell else 1 for t in cell_types]
    model = keras.Model(inputs, [output, *(s for group in states for s in group)])
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    weights = _random_weights(model, seed=len(cell_types))
    x = np.random.default_rng(0).normal(size=(3, 4, 3)).astype(np.float32)
    expected = kr.stacked_rnn(
        x,
        _reference_cells(cell_types, weights),
        return_sequences=return_sequences,
        return_state=True,
        go_backwards=go_backwards,
    )
    for want, got in zip(expected, model.predict(x, verbose=0), strict=True):
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_masks_and_initial_states_follow_keras():
    """mask_zero padding keeps every cell's states and repeats the output; `initial_state` is Keras's nested form,
    one entry per cell (a one-state cell's may be a bare tensor)."""
    ids = keras.Input(shape=(5,), dtype="int32")
    h1, c1, h2 = keras.Input(shape=(4,)), keras.Input(shape=(4,)), keras.Input(shape=(3,))
    embedded = L.Embedding(7, 2, mask_zero=True)(ids)
    output = L.RNN([L.LSTMCell(4), L.GRUCell(3)], return_sequences=True)(embedded, initial_state=[[h1, c1], h2])
    model = keras.Model([ids, h1, c1, h2], output)
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    embeddings, *weights = _random_weights(model, seed=3)
    rng = np.random.default_rng(1)
    tokens = np.array([[1, 2, 3, 0, 0], [0, 0, 4, 5, 6], [1, 0, 2, 0, 3]], dtype=np.int32)
    states = [rng.normal(size=(3, n)).astype(np.float32) for n in (4, 4, 3)]
    expected = kr.stacked_rnn(
        embeddings[tokens],
        _reference_cells((L.LSTMCell, L.GRUCell), weights),
        return_sequences=True,
        mask=tokens != 0,
        initial_state=states,
    )
    np.testing.assert_allclose(model.predict([tokens, *states], verbose=0), expected, rtol=RTOL, atol=ATOL)


def test_bidirectional_runs_the_stack_both_ways():
    inputs = keras.Input(shape=(4, 3))
    output = L.Bidirectional(L.RNN([L.GRUCell(3), L.SimpleRNNCell(2)], return_sequences=True))(inputs)
    model = keras.Model(inputs, output)
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    weights = _random_weights(model, seed=4)
    assert [w.shape for w in weights] == [(3, 9), (3, 9), (2, 9), (3, 2), (2, 2), (2,)] * 2
    x = np.random.default_rng(2).normal(size=(2, 4, 3)).astype(np.float32)

    def direction(half):
        cells = _reference_cells((L.GRUCell, L.SimpleRNNCell), half)
        return lambda x, **kwargs: kr.stacked_rnn(x, cells, **kwargs)

    expected = kr.bidirectional(x, direction(weights[:6]), direction(weights[6:]), return_sequences=True)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, rtol=RTOL, atol=ATOL)


def test_one_layer_with_keras_names_weight_order_and_summary_row():
    inputs = keras.Input(shape=(6, 3))
    hidden = L.RNN([L.LSTMCell(8), L.GRUCell(4)], return_sequences=True)(inputs)
    output = L.RNN(L.StackedRNNCells([L.SimpleRNNCell(2), L.SimpleRNNCell(5)]))(hidden)
    model = keras.Model(inputs, output)
    assert [layer.name for layer in model.layers] == ["input_layer", "rnn", "rnn_1"]
    # Keras's order: cell by cell, each cell's kernel, recurrent_kernel, bias
    shapes = [(3, 32), (8, 32), (32,), (8, 12), (4, 12), (2, 12), (4, 2), (2, 2), (2,), (2, 5), (5, 5), (5,)]
    assert [w.shape for w in model.get_weights()] == shapes
    assert [w.shape for w in model.get_layer("rnn").get_weights()] == shapes[:6]
    lines = []
    model.summary(print_fn=lines.append)
    (row,) = [line for line in lines[0].splitlines() if "rnn (RNN)" in line]
    assert "(None, 6, 4)" in row and f"{sum(int(np.prod(s)) for s in shapes[:6]):,}" in row


def test_cells_initializers_regularizers_and_trainable_are_each_cells():
    inputs = keras.Input(shape=(3, 2))
    rnn = L.RNN([L.LSTMCell(2, kernel_regularizer="l2", bias_initializer="zeros"), L.LSTMCell(3, trainable=False)])
    model = keras.Model(inputs, rnn(inputs))
    (layer,) = [layer for layer in model.graph.layers() if layer.name == "rnn"]
    assert [p.regularizer is not None for p in layer.params] == [True] + [False] * 5
    assert [p.trainable for p in layer.params] == [True] * 3 + [False] * 3
    first_bias = model.get_weights()[2]
    np.testing.assert_array_equal(first_bias, [0, 0, 1, 1, 0, 0, 0, 0])  # unit_forget_bias, as in Keras
    rnn.trainable = False
    rnn.trainable = True  # as Keras's setter, it reaches every cell
    assert all(cell.config["trainable"] for cell in rnn.config["cells"])


def test_training_equals_two_stacked_layers_and_the_cpu_kernels_agree():
    """One epoch of SGD on the `rnn` layer compiled for the CPU ends where the equivalent LSTM(…,
    return_sequences=True) → GRU(…) model, run by the interpreter, does: same weights, same numbers."""
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(8, 5, 3)).astype(np.float32), rng.normal(size=(8, 2)).astype(np.float32)

    def model(recurrent, target):
        inputs = keras.Input(shape=(5, 3))
        built = keras.Model(inputs, L.Dense(2)(recurrent(inputs)))
        built.compile(optimizer="sgd", loss="mse", target=target)
        return built

    layered = model(lambda t: L.GRU(3)(L.LSTM(4, return_sequences=True)(t)), "numpy")
    stacked = model(L.RNN([L.LSTMCell(4), L.GRUCell(3)]), "cpu")
    initial = layered.get_weights()
    stacked.set_weights(initial)
    for built in (layered, stacked):
        built.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for before, expected, actual in zip(initial, layered.get_weights(), stacked.get_weights(), strict=True):
        assert not np.array_equal(expected, before)
        np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_kd_text_and_saved_archives_load_back(tmp_path):
    inputs = keras.Input(shape=(4, 3))
    output, (_, c1), (h2,) = L.RNN([L.LSTMCell(3), L.GRUCell(2, dropout=0.25)], return_state=True, go_backwards=True)(
        inputs
    )
    model = keras.Model(inputs, [output, c1, h2])
    text = model.to_kd()
    assert (
        "stacked_rnn(input_layer, [lstm(3), gru(2, dropout=0.25)], return_state=true, go_backwards=true, name=rnn)"
        in text
    )
    assert load(text).model() == model.graph
    model.compile(optimizer="adam", loss="mse", target="numpy")
    x = np.random.default_rng(3).normal(size=(2, 4, 3)).astype(np.float32)
    model.fit(x, [np.ones((2, 2)), np.ones((2, 3)), np.ones((2, 2))], epochs=1, verbose=0)
    model.save(tmp_path / "stacked.kdz")
    again = keras.load_model(tmp_path / "stacked.kdz")
    for expected, actual in zip(model.predict(x, verbose=0), again.predict(x, verbose=0), strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_kd_takes_flat_initial_states():
    model = load(
        """
        model M(x: f32[batch, 4, 2], h1: f32[batch, 3], c1: f32[batch, 3], h2: f32[batch, 2]) -> (y, s) {
            y, a, b, s = stacked_rnn(x, [lstm(3), simple_rnn(2)], return_state=true, initial_state=[h1, c1, h2])
        }
        """
    ).model()
    names = [p.name for p in model.nodes[0].layer.params]
    assert names[:4] == ["cell_0/kernel", "cell_0/recurrent_kernel", "cell_0/bias", "cell_1/kernel"]
    assert [v.type.dims[1] for v in model.outputs] == [2, 2]
    text = "model M(x: f32[batch, 4, 2], h: f32[batch, 3]) -> y {\n"
    text += "y = stacked_rnn(x, [lstm(3), gru(2)], initial_state=[h, h])\n}"
    with pytest.raises(KdslShapeError, match=r"takes 3 initial state\(s\) \(h1, c1, h2\), got 2"):
        load(text)


def test_what_cannot_run_is_refused_clearly():
    inputs = keras.Input(shape=(4, 3))
    with pytest.raises(KdslArgumentError, match="a cell takes no `return_sequences`"):
        L.RNN([L.LSTMCell(3, return_sequences=True), L.LSTMCell(2)])
    with pytest.raises(KdslArgumentError, match="SimpleRNNCell, LSTMCell, GRUCell, a layer of your own"):
        L.RNN(object())
    with pytest.raises(KdslArgumentError, match="a recurrent cell"):
        L.RNN([L.LSTMCell(3), L.Dense(2)])
    with pytest.raises(KdslUnsupportedError, match="unroll"):
        L.RNN([L.LSTMCell(3), L.LSTMCell(2)], unroll=True)
    with pytest.raises(KdslUnsupportedError, match="zero_output_for_mask"):
        L.RNN([L.LSTMCell(3), L.LSTMCell(2)], zero_output_for_mask=True)
    h = keras.Input(shape=(3,))
    with pytest.raises(KdslArgumentError, match="one `initial_state` entry per cell"):
        L.RNN([L.LSTMCell(3), L.LSTMCell(3)])(inputs, initial_state=[h, h, h, h])
    sequences = keras.Input(shape=(2, 4, 3))
    with pytest.raises(KdslUnsupportedError, match="time_distributed"):
        model = keras.Model(sequences, L.TimeDistributed(L.RNN([L.LSTMCell(3), L.LSTMCell(2)]))(sequences))
        model.compile(optimizer="sgd", loss="mse", target="numpy")
