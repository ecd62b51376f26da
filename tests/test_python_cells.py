"""Cells written in Python as Keras users write them (`state_size`, `call(inputs, states)`), traced once into the
`rnn` layer's step graph: against a NumPy loop over the cell's equations, finite differences, the built-in LSTM,
and the errors."""

from __future__ import annotations

import numpy as np
import pytest

import kdsl
from kdsl import layers, ops
from kdsl.errors import KdslArgumentError, KdslShapeError, KdslUnsupportedError

STEPS, FEATURES, UNITS, CLASSES = 6, 5, 4, 3


class MinimalGRUCell(layers.Layer):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = self.state_size = units
        self.forget = layers.Dense(units, activation="sigmoid")
        self.candidate = layers.Dense(units, activation="tanh")

    def call(self, inputs, states):
        h = states[0]
        f = self.forget(ops.concatenate([inputs, h], axis=-1))
        h = f * h + (1 - f) * self.candidate(inputs)
        return h, [h]


class LSTMCellOfMyOwn(layers.Layer):
    """Keras's LSTM equations: each gate from a product of the input and one of the state."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units, self.state_size = units, [units, units]

    def build(self, input_shape):
        self.gates = [(layers.Dense(self.units), layers.Dense(self.units, use_bias=False)) for _ in range(4)]

    def call(self, inputs, states):
        h, c = states
        i, f, g, o = (of_inputs(inputs) + of_state(h) for of_inputs, of_state in self.gates)
        c = ops.sigmoid(f) * c + ops.sigmoid(i) * ops.tanh(g)
        h = ops.sigmoid(o) * ops.tanh(c)
        return h, [h, c]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def mgu_loop(x, kernel_f, bias_f, kernel_c, bias_c, reverse=False):
    """The minimal gated unit over every step, float64: (outputs at each step, last state)."""
    x = x.astype(np.float64)
    h = np.zeros((x.shape[0], kernel_f.shape[1]))
    outputs = []
    for t in reversed(range(x.shape[1])) if reverse else range(x.shape[1]):
        f = sigmoid(np.concatenate([x[:, t], h], axis=1) @ kernel_f + bias_f)
        h = f * h + (1 - f) * np.tanh(x[:, t] @ kernel_c + bias_c)
        outputs.append(h)
    return np.stack(outputs, axis=1), h


def data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((8, STEPS, FEATURES)).astype(np.float32), rng.integers(0, CLASSES, 8)


@pytest.fixture(scope="module")
def classifier():
    x = kdsl.Input(shape=(STEPS, FEATURES))
    h = layers.RNN(MinimalGRUCell(UNITS))(x)
    model = kdsl.Model(x, layers.Dense(CLASSES, activation="softmax")(h))
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", seed=3)
    return model


def test_a_python_cell_runs_its_equations_over_every_step(classifier):
    x, _ = data()
    kernel_f, bias_f, kernel_c, bias_c, kernel_o, bias_o = classifier.get_weights()
    assert kernel_f.shape == (FEATURES + UNITS, UNITS) and kernel_c.shape == (FEATURES, UNITS)
    _, h = mgu_loop(x, kernel_f, bias_f, kernel_c, bias_c)
    logits = h @ kernel_o + bias_o
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(classifier.predict(x, verbose=0), expected, rtol=1e-5, atol=1e-6)
    assert [repr(layer).split()[0] for layer in classifier.layers[1:]] == ["<RNN", "<Dense"]
    assert classifier.count_params() == (FEATURES + UNITS + 1) * UNITS + (FEATURES + 1) * UNITS + (UNITS + 1) * 3


def test_a_python_cells_gradients_equal_finite_differences(classifier):
    x, y = data(1)
    weights = classifier.get_weights()
    compiled = classifier.trainer.compiled
    compiled.train_step([x], [y.astype(np.int32)])
    grads = [g.copy() for g in compiled.grads]

    def loss(ws):
        _, h = mgu_loop(x, *ws[:4])
        logits = h @ ws[4] + ws[5]
        logits -= logits.max(axis=1, keepdims=True)
        log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return -log_probs[np.arange(len(y)), y].mean()

    rng = np.random.default_rng(0)
    ws = [w.astype(np.float64) for w in weights]
    for index, grad in enumerate(grads):
        for flat in rng.choice(ws[index].size, 3, replace=False):
            step = 1e-5
            plus, minus = [w.copy() for w in ws], [w.copy() for w in ws]
            plus[index].flat[flat] += step
            minus[index].flat[flat] -= step
            expected = (loss(plus) - loss(minus)) / (2 * step)
            assert grad.flat[flat] == pytest.approx(expected, rel=1e-3, abs=1e-6)


def test_return_sequences_and_state_and_go_backwards_of_a_python_cell():
    x, _ = data(2)
    inputs = kdsl.Input(shape=(STEPS, FEATURES))
    rnn = layers.RNN(MinimalGRUCell(UNITS), return_sequences=True, return_state=True, go_backwards=True)
    sequence, state = rnn(inputs)
    model = kdsl.Model(inputs, [sequence, state])
    got_sequence, got_state = model.predict(x, verbose=0)
    expected_sequence, expected_state = mgu_loop(x, *model.get_weights(), reverse=True)
    np.testing.assert_allclose(got_sequence, expected_sequence, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_state, expected_state, rtol=1e-5, atol=1e-6)


def test_an_lstm_written_as_a_python_cell_gives_the_built_in_lstms_outputs():
    x, _ = data(3)
    inputs = kdsl.Input(shape=(STEPS, FEATURES))
    builtin = kdsl.Model(inputs, layers.LSTM(UNITS, return_sequences=True)(inputs))
    own_inputs = kdsl.Input(shape=(STEPS, FEATURES))
    own = kdsl.Model(own_inputs, layers.RNN(LSTMCellOfMyOwn(UNITS), return_sequences=True)(own_inputs))
    kernel, recurrent_kernel, bias = builtin.get_weights()
    gates = [slice(k * UNITS, (k + 1) * UNITS) for k in range(4)]  # i, f, c, o: Keras's order
    own.set_weights([w for gate in gates for w in (kernel[:, gate], bias[gate], recurrent_kernel[:, gate])])
    np.testing.assert_allclose(own.predict(x, verbose=0), builtin.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_what_a_python_cell_cannot_do_is_refused_clearly():
    class ConstantWeight(layers.Layer):
        state_size = 3

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], 3), trainable=False)

        def call(self, inputs, states):
            return states[0], states

    class NoStateSize(layers.Layer):
        state_size = 0

        def call(self, inputs, states):
            return inputs, states

    class ReturnsOneThing(layers.Layer):
        state_size = 3

        def call(self, inputs, states):
            return states[0]

    class InitialStatesOfItsOwn(MinimalGRUCell):
        def get_initial_state(self, batch_size=None):
            return [np.full((batch_size, self.units), 0.5, np.float32)]

    class HeldInAnotherOrder(MinimalGRUCell):
        def call(self, inputs, states):
            c = self.candidate(inputs)
            f = self.forget(ops.concatenate([inputs, states[0]], axis=-1))
            h = f * states[0] + (1 - f) * c
            return h, [h]

    x = kdsl.Input(shape=(STEPS, FEATURES))
    with pytest.raises(KdslUnsupportedError, match="in another order than it holds them"):
        layers.RNN(HeldInAnotherOrder(3))(x)
    with pytest.raises(KdslUnsupportedError, match="get_initial_state"):
        layers.RNN(InitialStatesOfItsOwn(3))(x)
    with pytest.raises(KdslUnsupportedError, match="add_weight` with trainable"):
        layers.RNN(ConstantWeight())(x)
    with pytest.raises(KdslArgumentError, match="state_size"):
        layers.RNN(NoStateSize())(x)
    with pytest.raises(KdslArgumentError, match=r"returns \(output, new_states\)"):
        layers.RNN(ReturnsOneThing())(x)
    with pytest.raises(KdslUnsupportedError, match="a layer of your own, on tensors"):
        MinimalGRUCell(3)(kdsl.Input(shape=(FEATURES,)))
    with pytest.raises(KdslArgumentError, match="takes name, trainable and dtype"):
        layers.Layer(units=3)
    with pytest.raises(KdslUnsupportedError, match="a cell of your own"):
        layers.Bidirectional(layers.RNN(MinimalGRUCell(3)))
    with pytest.raises(KdslUnsupportedError, match="batch axis"):
        ops.concatenate([x, x])


def test_a_stateful_python_cell_goes_on_from_the_last_batchs_states():
    """A sequence fed in chunks equals the whole sequence at once; reset_states starts again from zeros."""
    x, _ = data(4)
    x = x[:2]
    inputs = kdsl.Input(batch_shape=(2, None, FEATURES))
    rnn = layers.RNN(MinimalGRUCell(UNITS), stateful=True, return_sequences=True)
    model = kdsl.Model(inputs, rnn(inputs))
    expected, _ = mgu_loop(x, *model.get_weights())
    chunks = [model.predict_on_batch(x[:, t : t + 2]) for t in range(0, STEPS, 2)]
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(rnn.states[0], expected[:, -1], rtol=1e-5, atol=1e-6)
    model.reset_states()
    np.testing.assert_allclose(model.predict_on_batch(x[:, :2]), expected[:, :2], rtol=1e-5, atol=1e-6)


def test_a_model_with_a_python_cell_prints_as_kd_and_saves_and_loads(classifier, tmp_path):
    """The traced cell is written as a `.kd` cell; the text parses back to a model with the same predictions."""
    text = classifier.to_kd()
    assert "cell minimal_gru_cell" in text and "rnn(" in text
    x, _ = data(5)
    classifier.save(tmp_path / "cell.kdz")
    loaded = kdsl.load_model(tmp_path / "cell.kdz")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), classifier.predict(x, verbose=0))
    assert loaded.to_kd() == text


class MinimalRNNCell(layers.Layer):
    """Keras's own example of a cell (the RNN layer's documentation), with weights it holds itself."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="uniform", name="kernel")
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.units), initializer="uniform", name="recurrent_kernel"
        )

    def call(self, inputs, states):
        prev_output = states[0]
        h = ops.matmul(inputs, self.kernel)
        output = h + ops.matmul(prev_output, self.recurrent_kernel)
        return output, [output]


def test_keras_example_cell_with_weights_of_its_own_runs_trains_and_saves(tmp_path):
    x, _ = data(6)
    inputs = kdsl.Input((None, FEATURES))
    model = kdsl.Model(inputs, layers.RNN(MinimalRNNCell(UNITS))(inputs))
    assert model.state.names == ["rnn/kernel", "rnn/recurrent_kernel"]
    kernel, recurrent_kernel = (w.astype(np.float64) for w in model.get_weights())
    assert np.abs(kernel).max() <= 0.05  # Keras's "uniform": RandomUniform(-0.05, 0.05)
    h = np.zeros((len(x), UNITS))
    for t in range(STEPS):
        h = x[:, t] @ kernel + h @ recurrent_kernel
    np.testing.assert_allclose(model.predict(x, verbose=0), h, rtol=1e-5, atol=1e-6)
    model.compile(optimizer="sgd", loss="mse")
    target = np.ones((len(x), UNITS), np.float32)
    compiled = model.trainer.compiled
    compiled.train_step([x], [target])
    step = 1e-6
    for index, grad in enumerate(compiled.grads):  # against central differences of the float64 loop's MSE
        weights = [kernel.copy(), recurrent_kernel.copy()]

        def loss(ws):
            h = np.zeros((len(x), UNITS))
            for t in range(STEPS):
                h = x[:, t] @ ws[0] + h @ ws[1]
            return np.mean((h - 1.0) ** 2)

        plus, minus = [w.copy() for w in weights], [w.copy() for w in weights]
        plus[index].flat[3] += step
        minus[index].flat[3] -= step
        assert grad.flat[3] == pytest.approx((loss(plus) - loss(minus)) / (2 * step), rel=1e-3, abs=1e-6)
    model.fit(x, target, epochs=2, verbose=0)
    model.save(tmp_path / "cell.kdz")
    loaded = kdsl.load_model(tmp_path / "cell.kdz")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert "kernel = weight([5, 4], initializer=random_uniform, name=kernel)" in model.to_kd()


def test_matmul_is_by_a_weight_of_the_cell():
    class ByAState(MinimalGRUCell):
        def call(self, inputs, states):
            return states[0], [ops.matmul(states[0], states[0])]

    with pytest.raises(KdslShapeError, match=r"multiplies \(\.\.\., k\) by a weight \(k, n\)"):
        layers.RNN(ByAState(3))(kdsl.Input(shape=(STEPS, FEATURES)))
