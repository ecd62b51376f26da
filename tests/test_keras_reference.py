"""Sanity checks for the NumPy Keras oracle in keras_reference.py: a wrong oracle would pass a wrong backend."""

from __future__ import annotations

from functools import partial

import keras_reference as kr
import numpy as np
import pytest

B, T, F, U = 3, 5, 4, 3  # batch, timesteps, features, units
LENGTHS = np.array([5, 3, 1])  # right-padded valid lengths for the masking tests
GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3, "gru_reset_before": 3}
N_STATES = {"simple_rnn": 1, "lstm": 2, "gru": 1, "gru_reset_before": 1}


def _rnn(name: str, seed: int = 0):
    """A reference RNN with random weights in Keras layout, as a partial taking x and call options."""
    rng = np.random.default_rng(seed)
    g = GATES[name]
    kernel = rng.normal(scale=0.5, size=(F, g * U))
    recurrent_kernel = rng.normal(scale=0.5, size=(U, g * U))
    if name == "gru":
        return partial(kr.gru, kernel=kernel, recurrent_kernel=recurrent_kernel, bias=rng.normal(size=(2, g * U)))
    bias = rng.normal(size=(g * U,))
    if name == "gru_reset_before":
        return partial(kr.gru, kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias, reset_after=False)
    return partial(getattr(kr, name), kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias)


@pytest.fixture
def x() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(B, T, F))


def _padding_mask() -> np.ndarray:
    return np.arange(T)[None, :] < LENGTHS[:, None]


RNNS = pytest.mark.parametrize("name", list(GATES))


# --- (1) shapes -------------------------------------------------------------------------------------------------


@RNNS
@pytest.mark.parametrize("return_sequences", [False, True])
@pytest.mark.parametrize("return_state", [False, True])
def test_rnn_output_shapes(name, return_sequences, return_state, x):
    out = _rnn(name)(x, return_sequences=return_sequences, return_state=return_state)
    expected = (B, T, U) if return_sequences else (B, U)
    if not return_state:
        assert out.shape == expected
        return
    assert len(out) == 1 + N_STATES[name]
    assert out[0].shape == expected
    assert all(s.shape == (B, U) for s in out[1:])


@RNNS
def test_last_output_is_last_of_sequence_and_is_h(name, x):
    rnn = _rnn(name)
    seq, h, *_ = rnn(x, return_sequences=True, return_state=True)
    np.testing.assert_allclose(rnn(x), seq[:, -1])
    np.testing.assert_allclose(h, seq[:, -1])


# --- (2) masks --------------------------------------------------------------------------------------------------


@RNNS
def test_all_true_mask_row_matches_unmasked(name, x):
    rnn = _rnn(name)
    mask = _padding_mask()  # row 0 is all True, the others are padded
    masked = rnn(x, mask=mask, return_sequences=True, return_state=True)
    plain = rnn(x, return_sequences=True, return_state=True)
    for m, p in zip(masked, plain):
        np.testing.assert_allclose(m[0], p[0], rtol=0, atol=1e-12)
    full = rnn(x, mask=np.ones((B, T), bool), return_sequences=True, return_state=True)
    for m, p in zip(full, plain):
        np.testing.assert_allclose(m, p, rtol=0, atol=1e-12)


@RNNS
def test_right_padding_gives_final_state_of_prefix(name, x):
    rnn = _rnn(name)
    seq, *states = rnn(x, mask=_padding_mask(), return_sequences=True, return_state=True)
    for i, n in enumerate(LENGTHS):
        prefix_seq, *prefix_states = rnn(x[i : i + 1, :n], return_sequences=True, return_state=True)
        for s, p in zip(states, prefix_states):
            np.testing.assert_allclose(s[i], p[0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(seq[i, :n], prefix_seq[0], rtol=0, atol=1e-12)
        # Masked steps repeat the previous output (zero_output_for_mask=False).
        np.testing.assert_allclose(seq[i, n:], np.broadcast_to(prefix_seq[0, -1], (T - n, U)))


@RNNS
def test_backward_right_padding_skips_padding_first(name, x):
    rnn = _rnn(name)
    seq, *states = rnn(x, mask=_padding_mask(), go_backwards=True, return_sequences=True, return_state=True)
    for i, n in enumerate(LENGTHS):
        prefix_seq, *prefix_states = rnn(x[i : i + 1, :n], go_backwards=True, return_sequences=True, return_state=True)
        for s, p in zip(states, prefix_states):
            np.testing.assert_allclose(s[i], p[0], rtol=0, atol=1e-12)
        # Processing order: the padding comes first, before any output exists, so it outputs zeros.
        np.testing.assert_array_equal(seq[i, : T - n], 0.0)
        np.testing.assert_allclose(seq[i, T - n :], prefix_seq[0], rtol=0, atol=1e-12)


def test_masked_first_step_outputs_zeros_but_keeps_initial_state(x):
    h0 = np.full((B, U), 0.7)
    mask = np.ones((B, T), bool)
    mask[:, 0] = False
    seq, h = _rnn("gru")(x, mask=mask, initial_state=[h0], return_sequences=True, return_state=True)
    np.testing.assert_array_equal(seq[:, 0], 0.0)
    np.testing.assert_allclose(h, _rnn("gru")(x[:, 1:], initial_state=[h0]))


# --- (3) go_backwards -------------------------------------------------------------------------------------------


@RNNS
def test_go_backwards_equals_reversed_input(name, x):
    rnn = _rnn(name)
    mask = _padding_mask()
    for m, m_rev in ((None, None), (mask, mask[:, ::-1])):
        back = rnn(x, mask=m, go_backwards=True, return_sequences=True, return_state=True)
        rev = rnn(x[:, ::-1], mask=m_rev, return_sequences=True, return_state=True)
        for a, b in zip(back, rev):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


# --- (4) PyTorch ------------------------------------------------------------------------------------------------


def _torch_run(module, x, h0, c0=None):
    torch = pytest.importorskip("torch")
    hx = torch.from_numpy(h0[None]) if c0 is None else (torch.from_numpy(h0[None]), torch.from_numpy(c0[None]))
    with torch.no_grad():
        return module(torch.from_numpy(x), hx)


def test_lstm_matches_torch(x):
    torch = pytest.importorskip("torch")
    rnn = _rnn("lstm")
    kw = rnn.keywords
    module = torch.nn.LSTM(F, U, batch_first=True, dtype=torch.float64)
    with torch.no_grad():  # both use gate order i, f, c(g), o
        module.weight_ih_l0.copy_(torch.from_numpy(kw["kernel"].T))
        module.weight_hh_l0.copy_(torch.from_numpy(kw["recurrent_kernel"].T))
        module.bias_ih_l0.copy_(torch.from_numpy(kw["bias"]))
        module.bias_hh_l0.zero_()
    rng = np.random.default_rng(2)
    h0, c0 = rng.normal(size=(B, U)), rng.normal(size=(B, U))
    out, (h, c) = _torch_run(module, x, h0, c0)
    seq, ref_h, ref_c = rnn(x, initial_state=[h0, c0], return_sequences=True, return_state=True)
    np.testing.assert_allclose(seq, out.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ref_h, h[0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ref_c, c[0].numpy(), rtol=0, atol=1e-6)


def test_gru_reset_after_matches_torch(x):
    torch = pytest.importorskip("torch")
    rnn = _rnn("gru")
    kw = rnn.keywords
    perm = np.concatenate([np.arange(U, 2 * U), np.arange(U), np.arange(2 * U, 3 * U)])  # Keras z,r,h -> torch r,z,n
    module = torch.nn.GRU(F, U, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        module.weight_ih_l0.copy_(torch.from_numpy(kw["kernel"][:, perm].T))
        module.weight_hh_l0.copy_(torch.from_numpy(kw["recurrent_kernel"][:, perm].T))
        module.bias_ih_l0.copy_(torch.from_numpy(kw["bias"][0, perm]))
        module.bias_hh_l0.copy_(torch.from_numpy(kw["bias"][1, perm]))
    h0 = np.random.default_rng(3).normal(size=(B, U))
    out, h = _torch_run(module, x, h0)
    seq, ref_h = rnn(x, initial_state=[h0], return_sequences=True, return_state=True)
    np.testing.assert_allclose(seq, out.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ref_h, h[0].numpy(), rtol=0, atol=1e-6)


def test_gru_reset_before_and_after_agree_only_for_uniform_reset_gate(x):
    """With r constant across units and no recurrent bias, r*(hU) == (r*h)U; otherwise they differ."""
    rng = np.random.default_rng(4)
    kernel, recurrent_kernel = rng.normal(size=(F, 3 * U)), rng.normal(size=(U, 3 * U))
    bias = rng.normal(size=(3 * U,))

    def after():
        return kr.gru(x, kernel, recurrent_kernel, np.stack([bias, np.zeros(3 * U)]))

    def before():
        return kr.gru(x, kernel, recurrent_kernel, bias, reset_after=False)

    assert not np.allclose(after(), before())
    kernel[:, U : 2 * U] = 0.0
    recurrent_kernel[:, U : 2 * U] = 0.0
    bias[U : 2 * U] = 0.3
    np.testing.assert_allclose(after(), before(), rtol=0, atol=1e-12)


# --- Bidirectional ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_merge_and_state_order(merge_mode, x):
    fwd, bwd = _rnn("lstm", seed=5), _rnn("lstm", seed=6)
    out = kr.bidirectional(x, fwd, bwd, merge_mode=merge_mode, return_sequences=True, return_state=True)
    y, *fs = fwd(x, return_sequences=True, return_state=True)
    y_rev, *bs = bwd(x, go_backwards=True, return_sequences=True, return_state=True)
    y_rev = y_rev[:, ::-1]
    expected = {
        "concat": [np.concatenate([y, y_rev], axis=-1)],
        "sum": [y + y_rev],
        "mul": [y * y_rev],
        "ave": [(y + y_rev) / 2],
        None: [y, y_rev],
    }[merge_mode]
    assert len(out) == len(expected) + 4
    for a, b in zip(out, [*expected, *fs, *bs]):
        np.testing.assert_allclose(a, b)


def test_bidirectional_masked_sequence_outputs_zeros(x):
    fwd, bwd = _rnn("gru", seed=5), _rnn("gru", seed=6)
    mask = _padding_mask()
    seq = kr.bidirectional(x, fwd, bwd, return_sequences=True, mask=mask)
    assert seq.shape == (B, T, 2 * U)
    np.testing.assert_array_equal(seq[~mask], 0.0)
    last = kr.bidirectional(x, fwd, bwd, mask=mask)
    np.testing.assert_allclose(last, np.concatenate([fwd(x, mask=mask), bwd(x, mask=mask, go_backwards=True)], -1))


def test_bidirectional_matches_torch(x):
    torch = pytest.importorskip("torch")
    fwd, bwd = _rnn("lstm", seed=5), _rnn("lstm", seed=6)
    module = torch.nn.LSTM(F, U, batch_first=True, bidirectional=True, dtype=torch.float64)
    with torch.no_grad():
        for suffix, rnn in (("l0", fwd), ("l0_reverse", bwd)):
            getattr(module, f"weight_ih_{suffix}").copy_(torch.from_numpy(rnn.keywords["kernel"].T))
            getattr(module, f"weight_hh_{suffix}").copy_(torch.from_numpy(rnn.keywords["recurrent_kernel"].T))
            getattr(module, f"bias_ih_{suffix}").copy_(torch.from_numpy(rnn.keywords["bias"]))
            getattr(module, f"bias_hh_{suffix}").zero_()
    with torch.no_grad():
        out, (h, _) = module(torch.from_numpy(x))
    seq, fh, _, bh, _ = kr.bidirectional(x, fwd, bwd, return_sequences=True, return_state=True)
    np.testing.assert_allclose(seq, out.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fh, h[0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(bh, h[1].numpy(), rtol=0, atol=1e-6)


# --- Activations and simple layers ------------------------------------------------------------------------------


def test_activation_defaults():
    a = kr.ACTIVATIONS
    assert set(a) == {
        "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "hard_sigmoid", "tanh",
        "softmax", "log_softmax", "softplus", "softsign", "silu", "exponential", "hard_silu",
    }  # fmt: skip
    v = np.array([-4.0, -1.0, 0.0, 1.0, 7.0])
    np.testing.assert_allclose(a["leaky_relu"](v), [-0.8, -0.2, 0.0, 1.0, 7.0])
    np.testing.assert_allclose(a["relu6"](v), [0.0, 0.0, 0.0, 1.0, 6.0])
    np.testing.assert_allclose(a["hard_sigmoid"](v), [0.0, 2 / 6, 0.5, 4 / 6, 1.0])
    # the example of keras.layers.HardSwish's docstring, to its four decimals
    hard_silu = a["hard_silu"](np.array([-10.0, -2.5, 0.0, 2.5, 10.0]))
    np.testing.assert_allclose(hard_silu, [0.0, -0.2083, 0.0, 2.2917, 10.0], atol=5e-5)
    np.testing.assert_allclose(a["gelu"](np.array([1.0])), [0.8413447460685429])  # exact erf form
    np.testing.assert_allclose(a["selu"](np.array([-1.0, 1.0])), [-1.1113307378125625, 1.0507009873554805])
    np.testing.assert_allclose(a["softplus"](np.array([0.0])), [np.log(2.0)])
    m = np.random.default_rng(7).normal(size=(2, 3, 4))
    np.testing.assert_allclose(a["softmax"](m).sum(axis=-1), 1.0)
    np.testing.assert_allclose(a["log_softmax"](m), np.log(a["softmax"](m)))


def test_dense_rank3_and_time_distributed():
    rng = np.random.default_rng(8)
    x3 = rng.normal(size=(B, T, F))
    kernel, bias = rng.normal(size=(F, U)), rng.normal(size=U)
    y = kr.dense(x3, kernel, bias, activation="relu")
    assert y.shape == (B, T, U)
    np.testing.assert_allclose(y[1, 2], np.maximum(x3[1, 2] @ kernel + bias, 0.0))
    per_step = partial(kr.dense, kernel=kernel, bias=bias, activation="relu")
    np.testing.assert_allclose(kr.time_distributed(x3, per_step), y)


def test_embedding_and_mask():
    table = np.arange(12.0).reshape(4, 3)
    ids = np.array([[1, 3, 0], [2, 0, 0]])
    np.testing.assert_array_equal(kr.embedding(ids, table)[0, 1], table[3])
    np.testing.assert_array_equal(kr.embedding_mask(ids), [[True, True, False], [True, False, False]])


def test_shape_layers_and_merges():
    x = np.arange(24.0).reshape(2, 3, 4)
    assert kr.flatten(x).shape == (2, 12)
    assert kr.reshape(x, (4, 3)).shape == (2, 4, 3)
    np.testing.assert_array_equal(kr.repeat_vector(x[:, 0], 5)[:, 4], x[:, 0])
    assert kr.concatenate([x, x], axis=1).shape == (2, 6, 4)
    np.testing.assert_array_equal(kr.add([x, x, x]), 3 * x)
    np.testing.assert_array_equal(kr.multiply([x, x]), x * x)
    keep = (np.arange(24).reshape(2, 3, 4) % 2).astype(float)
    np.testing.assert_allclose(kr.dropout(x, keep, 0.5), x * keep * 2.0)


# --- (5) losses -------------------------------------------------------------------------------------------------

PROBS = np.array([[0.05, 0.95, 0.0], [0.1, 0.8, 0.1]])


def test_crossentropy_hand_example():
    expected = [-np.log(0.95), -np.log(0.1)]  # the keras.losses docstring example: [0.0513, 2.303]
    np.testing.assert_allclose(kr.sparse_categorical_crossentropy(np.array([1, 2]), PROBS), expected)
    np.testing.assert_allclose(kr.sparse_categorical_crossentropy(np.array([[1], [2]]), PROBS), expected)
    np.testing.assert_allclose(kr.categorical_crossentropy(np.eye(3)[[1, 2]], PROBS), expected)
    # A zero probability on the true class is clipped to 1e-7, not -log(0).
    clipped = [-np.log(1e-7), -np.log(0.1)]
    np.testing.assert_allclose(kr.sparse_categorical_crossentropy(np.array([2, 0]), PROBS), clipped)
    # A certain prediction is clipped to 1 - 1e-7, so even a perfect answer costs about 1e-7.
    np.testing.assert_allclose(kr.categorical_crossentropy(np.eye(3)[[1]], np.eye(3)[[1]]), [-np.log(1 - 1e-7)])
    # Unnormalised probabilities are renormalised first.
    np.testing.assert_allclose(kr.categorical_crossentropy(np.eye(3)[[1, 2]], 2 * PROBS), expected)


def test_crossentropy_label_smoothing_and_logits():
    logits = np.array([[1.0, 2.0, 0.5]])
    log_p = logits - np.log(np.exp(logits).sum())
    sparse = kr.sparse_categorical_crossentropy(np.array([1]), logits, from_logits=True)
    np.testing.assert_allclose(sparse, -log_p[:, 1])
    smoothed = np.array([[0.1, 0.8, 0.1]])  # one-hot class 1 with label_smoothing 0.3 over 3 classes
    np.testing.assert_allclose(
        kr.categorical_crossentropy(np.eye(3)[[1]], logits, from_logits=True, label_smoothing=0.3),
        -(smoothed * log_p).sum(axis=-1),
    )


def test_binary_crossentropy():
    y_true = np.array([[0.0, 1.0], [1.0, 1.0]])
    y_pred = np.array([[0.2, 0.6], [0.9, 1.0]])
    expected = [(-np.log(0.8) - np.log(0.6)) / 2, (-np.log(0.9) - np.log(1 - 1e-7)) / 2]
    np.testing.assert_allclose(kr.binary_crossentropy(y_true, y_pred), expected)
    smoothed = np.array([[0.1, 0.9]])  # label_smoothing 0.2 pulls toward 0.5
    p = np.array([[0.3, 0.6]])
    np.testing.assert_allclose(
        kr.binary_crossentropy(np.array([[0.0, 1.0]]), p, label_smoothing=0.2),
        np.mean(-(smoothed * np.log(p) + (1 - smoothed) * np.log(1 - p)), axis=-1),
    )
    logits = np.array([[-2.0, 0.5, 3.0]])
    labels = np.array([[0.0, 1.0, 1.0]])
    np.testing.assert_allclose(
        kr.binary_crossentropy(labels, logits, from_logits=True),
        kr.binary_crossentropy(labels, 1 / (1 + np.exp(-logits))),
    )


def test_regression_losses():
    y_true, y_pred = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 1.0], [5.0, 4.0]])
    np.testing.assert_allclose(kr.mean_squared_error(y_true, y_pred), [0.5, 2.0])
    np.testing.assert_allclose(kr.mean_absolute_error(y_true, y_pred), [0.5, 1.0])
    # A rank-1 target against a (batch, 1) prediction is one value per sample, not a broadcast matrix.
    np.testing.assert_allclose(kr.mean_squared_error(np.array([1.0, 2.0]), np.array([[2.0], [2.0]])), [1.0, 0.0])


# --- (6) batch normalization ------------------------------------------------------------------------------------


def test_batch_normalization_training_and_inference():
    x = np.random.default_rng(9).normal(loc=2.0, scale=5.0, size=(16, 3))
    ones, zeros = np.ones(3), np.zeros(3)
    y, mean, var = kr.batch_normalization(x, ones, zeros, zeros, ones, training=True)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=0), 1.0, atol=1e-3)
    np.testing.assert_allclose(mean, 0.01 * x.mean(axis=0))
    np.testing.assert_allclose(var, 0.99 + 0.01 * x.var(axis=0))
    gamma, beta = np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.0, -1.0])
    y, m2, v2 = kr.batch_normalization(x, gamma, beta, mean, var)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3) * gamma + beta)
    np.testing.assert_array_equal(m2, mean)  # inference leaves the moving statistics alone
    np.testing.assert_array_equal(v2, var)


def test_batch_normalization_channel_axis():
    x = np.random.default_rng(10).normal(size=(4, 3, 5))
    y, mean, _ = kr.batch_normalization(x, np.ones(3), np.zeros(3), np.zeros(3), np.ones(3), axis=1, training=True)
    np.testing.assert_allclose(y.mean(axis=(0, 2)), 0.0, atol=1e-12)
    np.testing.assert_allclose(mean, 0.01 * x.mean(axis=(0, 2)))
