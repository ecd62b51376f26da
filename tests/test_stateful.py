"""Stateful recurrent layers, as Keras 3 defines them (keras/src/layers/rnn/rnn.py): each batch starts from the
states the previous batch left, in predict, predict_on_batch, evaluate and fit; `reset_state` sets them to zeros.
The states are no weights. References are keras_reference's NumPy layers, run over the whole sequence."""

from __future__ import annotations

import keras_reference as kr
import numpy as np
import pytest

import kdsl
from kdsl.errors import KdslArgumentError, KdslError, KdslShapeError
from kdsl.layers import GRU, LSTM, RNN, Bidirectional, Dense, GRUCell, Input, LSTMCell
from kdsl.pipeline import compile_model

B, F, U = 3, 2, 4  # batch, features, units
TOL = dict(rtol=1e-4, atol=1e-5)
REFERENCES = {"lstm": kr.lstm, "gru": kr.gru}


def sequence(steps: int, batch: int = B, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, steps, F)).astype(np.float32)


def reference(kind: str, model: kdsl.Model, x: np.ndarray, initial=None) -> list[np.ndarray]:
    """The whole sequence's outputs, then its final states, by the NumPy layer."""
    return REFERENCES[kind](x, *model.get_weights()[:3], return_sequences=True, return_state=True,
                            initial_state=initial)  # fmt: skip


_MODELS: dict[str, tuple[kdsl.Model, object]] = {}


def stateful(kind: str) -> tuple[kdsl.Model, object]:
    """A stateful layer over sequences of any length, batches of B; built once per kind and reset for each use."""
    if kind not in _MODELS:
        layer = {"lstm": LSTM, "gru": GRU}[kind](U, return_sequences=True, stateful=True)
        x = Input(shape=(None, F), batch_size=B)
        _MODELS[kind] = (kdsl.Model(x, layer(x)), layer)
    model, layer = _MODELS[kind]
    model.reset_states()
    return model, layer


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_chunks_fed_in_order_equal_the_whole_sequence(kind):
    model, layer = stateful(kind)
    x = sequence(7)
    whole, *final = reference(kind, model, x)
    chunks = [model.predict_on_batch(x[:, :3]), model.predict_on_batch(x[:, 3:5]), model.predict_on_batch(x[:, 5:])]
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), whole, **TOL)
    for state, expected in zip(layer.states, final, strict=True):  # the layer's own, and the model's view of it
        np.testing.assert_allclose(state, expected, **TOL)
    for state, expected in zip(model.get_layer(kind).states, final, strict=True):
        np.testing.assert_allclose(state, expected, **TOL)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_reset_starts_again_from_zeros(kind):
    model, layer = stateful(kind)
    x = sequence(4, seed=1)
    first = model.predict_on_batch(x)
    assert not np.allclose(model.predict_on_batch(x), first)  # the second call starts from the first's states
    layer.reset_states()
    np.testing.assert_allclose(model.predict_on_batch(x), first, **TOL)
    model.get_layer(kind).reset_state()
    np.testing.assert_allclose(model.predict_on_batch(x), first, **TOL)
    model.reset_state()
    assert all(not state.any() for state in layer.states)


def test_predict_carries_the_states_from_batch_to_batch():
    """Row i of each batch goes on from row i of the batch before (Keras's one-to-one mapping of samples)."""
    model, _ = stateful("lstm")
    x = sequence(5, batch=2 * B, seed=2)
    first, *states = reference("lstm", model, x[:B])
    second, *_ = reference("lstm", model, x[B:], initial=states)
    np.testing.assert_allclose(model.predict(x, batch_size=B), np.concatenate([first, second]), **TOL)


def test_serving_one_step_at_a_time_compiles_once():
    model, layer = stateful("gru")
    x = sequence(10, seed=3)
    compiled = model._runnable()
    steps = [model.predict_on_batch(x[:, t : t + 1]) for t in range(10)]
    stepped = [state.copy() for state in layer.states]
    model.reset_states()
    whole = model.predict_on_batch(x)
    np.testing.assert_allclose(np.concatenate(steps, axis=1), whole, **TOL)
    for state, expected in zip(stepped, layer.states, strict=True):
        np.testing.assert_allclose(state, expected, **TOL)
    assert model._runnable() is compiled  # one compiled program for every length...
    kernels = compiled.runner.entry_kernels("forward")
    assert kernels and all(len(kernel.function.overloads) == 1 for kernel in kernels)  # ...and one compile each


def test_states_are_no_weights_and_a_saved_model_goes_on_from_them(tmp_path):
    x = Input(shape=(None, F), batch_size=B)
    model = kdsl.Model(x, Dense(1)(LSTM(U, stateful=True)(x)))
    model.compile(optimizer="sgd", loss="mse")
    assert [w.shape for w in model.get_weights()] == [(F, 4 * U), (U, 4 * U), (4 * U,), (U, 1), (1,)]
    assert len(model.weights) == 5 and model.count_params() == sum(w.size for w in model.get_weights())
    first = sequence(3, seed=4)
    model.predict_on_batch(first)
    carried = [state.copy() for state in model.get_layer("lstm").states]
    assert all(state.any() for state in carried)
    model.save(tmp_path / "m.kdz")
    loaded = kdsl.load_model(tmp_path / "m.kdz")
    for state, expected in zip(loaded.get_layer("lstm").states, carried, strict=True):
        np.testing.assert_array_equal(state, expected)
    assert len(loaded.get_weights()) == 5
    after = sequence(2, seed=5)
    np.testing.assert_allclose(loaded.predict_on_batch(after), model.predict_on_batch(after), **TOL)
    model.save_weights(tmp_path / "w.npz")
    assert sorted(np.load(tmp_path / "w.npz").files) == sorted(model.state.names)
    model.save(tmp_path / "m.keras")  # Keras's file: the weights alone, as Keras keeps the states out
    keras_model = kdsl.load_model(tmp_path / "m.keras", compile=False)
    assert keras_model.inputs[0].shape[0] == B and len(keras_model.get_weights()) == 5
    assert len(keras_model.get_layer("lstm").states) == 2


def test_fit_and_evaluate_carry_the_states_across_batches():
    """With a learning rate too small to move a float32 weight, each batch's loss and the final states are the NumPy
    forward pass over the batches in order, each from the states of the one before."""
    x = Input(shape=(4, F), batch_size=B)
    model = kdsl.Model(x, Dense(1)(LSTM(U, stateful=True)(x)))
    model.compile(optimizer=kdsl.optimizers.SGD(learning_rate=1e-30), loss="mse")
    data, targets = sequence(4, batch=3 * B, seed=6), np.random.default_rng(7).normal(size=(3 * B, 1))
    states, losses = None, []
    kernel, recurrent, bias, dense, dense_bias = model.get_weights()
    for s in range(0, 3 * B, B):
        _, *states = kr.lstm(data[s : s + B], kernel, recurrent, bias, return_state=True, initial_state=states)
        losses.append(np.mean((states[0] @ dense + dense_bias - targets[s : s + B]) ** 2))
    history = model.fit(data, targets, batch_size=B, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(history.history["loss"][0], np.mean(losses), **TOL)
    for state, expected in zip(model.get_layer("lstm").states, states, strict=True):
        np.testing.assert_allclose(state, expected, **TOL)
    model.reset_states()
    np.testing.assert_allclose(model.evaluate(data, targets, batch_size=B, verbose=0), np.mean(losses), **TOL)
    for state, expected in zip(model.get_layer("lstm").states, states, strict=True):
        np.testing.assert_allclose(state, expected, **TOL)


def test_stacked_cells_and_bidirectional_carry_every_state():
    x = Input(shape=(None, F), batch_size=B)
    stacked = RNN([LSTMCell(U), GRUCell(3)], return_sequences=True, stateful=True)
    both = Bidirectional(GRU(U, return_sequences=True, stateful=True))
    model = kdsl.Model(x, [stacked(x), both(x)])
    data = sequence(6, seed=8)
    whole = model.predict_on_batch(data)
    assert [s.shape for s in stacked.states] == [(B, U), (B, U), (B, 3)] and len(both.states) == 2
    model.reset_states()
    halves = [model.predict_on_batch(data[:, :3]), model.predict_on_batch(data[:, 3:])]
    np.testing.assert_allclose(np.concatenate([h[0] for h in halves], axis=1), whole[0], **TOL)
    # the backward copy reads each chunk from its end, as Keras's stateful backward layer does
    forward = np.concatenate([h[1][..., :U] for h in halves], axis=1)
    np.testing.assert_allclose(forward, whole[1][..., :U], **TOL)
    assert not np.allclose(np.concatenate([h[1][..., U:] for h in halves], axis=1), whole[1][..., U:])


def test_a_stateful_layer_needs_a_fixed_batch_size():
    with pytest.raises(KdslShapeError, match="static batch size"):
        LSTM(U, stateful=True)(Input(shape=(5, F)))
    with pytest.raises(KdslError, match="static batch size") as error:
        kdsl.lang.load("model M(x: f32[batch, 5, 2]) -> y {\n    y = lstm(x, 4, stateful=true)\n}\n")
    assert error.value.span is not None and error.value.span.line == 2
    with pytest.raises(KdslArgumentError, match="stateful"):
        RNN([LSTMCell(U, stateful=True), LSTMCell(U)])
    x = Input(shape=(5, F), batch_size=B)
    twice = LSTM(U, stateful=True)
    model = kdsl.Model(x, kdsl.layers.Add()([twice(x), twice(x)]))
    with pytest.raises(KdslError, match="called more than once"):
        model.reset_states()


def test_a_batch_of_another_size_is_refused():
    model, _ = stateful("lstm")
    with pytest.raises(KdslArgumentError, match="fixed batch size of 3"):
        model.predict_on_batch(sequence(2, batch=B + 1))
    with pytest.raises(KdslArgumentError, match="fixed batch size of 3"):
        model.predict(sequence(2, batch=2 * B))  # one batch of 6: batch_size defaults to 32, as in Keras


def test_kd_files_fix_the_batch_with_a_number():
    program = kdsl.lang.load("model M(x: f32[3, steps, 2]) -> y {\n    y = gru(x, 4, stateful=true)\n}\n")
    model = kdsl.Model.from_graph(program.model("M"))
    assert model.inputs[0].shape == (3, "steps", 2)
    x = sequence(4, seed=9)
    _, *states = kr.gru(x, *model.get_weights(), return_state=True)
    model.predict_on_batch(x[:, :1])
    model.predict_on_batch(x[:, 1:])
    np.testing.assert_allclose(model.get_layer("gru").states[0], states[0], **TOL)
    assert "f32[3, steps, 2]" in model.to_kd()


def test_input_takes_keras_batch_arguments():
    assert Input(shape=(5, F), batch_size=B).shape == (B, 5, F)
    assert Input(batch_shape=(B, None, F)).shape[0] == B
    with pytest.raises(KdslArgumentError):
        Input(shape=(5, F), batch_shape=(B, 5, F))


def test_the_cuda_target_carries_the_states_as_the_interpreter():
    """On the CUDA target (Numba's simulator without a GPU) the states stay on the device between calls."""
    source = "model M(x: f32[2, steps, 3]) -> y {\n    y = lstm(x, 3, return_sequences=true, stateful=true)\n}\n"
    graph = kdsl.lang.load(source + "train M { loss = mse  optimizer = sgd }\n").model()
    interpreted = compile_model(graph, "numpy")
    device = compile_model(graph, "cuda")
    device.weights = interpreted.weights
    x, y = np.random.default_rng(10).normal(size=(2, 4, 3)).astype(np.float32), np.zeros((2, 2, 3), np.float32)
    for step, chunk in enumerate([x[:, :2], x[:, 2:], x[:, :2]]):
        before = [state.copy() for state in interpreted.state.carried_values()]
        if step < 2:
            np.testing.assert_allclose(device.forward(chunk)[0], interpreted.forward(chunk)[0], **TOL)
        else:
            interpreted.train_step([chunk], [y])
            device.train_step([chunk], [y])
        after = interpreted.state.carried_values()
        assert not any(np.allclose(old, new) for old, new in zip(before, after))
        for state, expected in zip(device.state.carried_values(), after, strict=True):
            np.testing.assert_allclose(state, expected, **TOL)


def test_a_nested_model_shares_its_states_with_the_outer_one():
    model, layer = stateful("lstm")
    x = Input(shape=(None, F), batch_size=B)
    outer = kdsl.Model(x, model(x))
    data = sequence(3, seed=11)
    outer.predict_on_batch(data)
    _, *final = reference("lstm", model, data)
    for state, expected in zip(layer.states, final, strict=True):
        np.testing.assert_allclose(state, expected, **TOL)
    model.reset_states()
    assert not any(state.any() for state in outer.state.carried_values())


def test_masked_steps_keep_the_carried_states():
    """Each chunk is Keras's call from the carried states, with the chunk's mask (`embedding(mask_zero=True)`)."""
    ids = Input(shape=(None,), batch_size=B, dtype="int32")
    layer = LSTM(U, return_sequences=True, stateful=True)
    model = kdsl.Model(ids, layer(kdsl.layers.Embedding(5, F, mask_zero=True)(ids)))
    table, *weights = model.get_weights()
    chunks = [np.array([[1, 2, 0], [3, 0, 0], [4, 4, 4]]), np.array([[0, 1], [0, 0], [2, 0]])]
    states, seen = None, []
    for chunk in chunks:
        expected, *states = kr.lstm(table[chunk], *weights, return_sequences=True, return_state=True,
                                    mask=chunk != 0, initial_state=states)  # fmt: skip
        np.testing.assert_allclose(model.predict_on_batch(chunk), expected, **TOL)
        for state, expected in zip(layer.states, states, strict=True):
            np.testing.assert_allclose(state, expected, **TOL)
        seen.append([state[1].copy() for state in layer.states])
    for first, second in zip(*seen):  # row 1 is all masked in the second chunk: its states stay
        np.testing.assert_array_equal(first, second)
        assert first.any()
