"""Plain-NumPy float64 re-implementation of Keras 3 layer equations, the oracle for backend tests.

It is written independently of kdsl so that a shared misunderstanding cannot make a backend and its oracle
agree by accident. Every semantic rule that is easy to get wrong cites the Keras 3 file it was read from
(github.com/keras-team/keras, `keras/src/...`). Where Keras backends disagree, the TensorFlow backend (the
Keras 3 default) is followed and the divergence is noted.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import erf

Array = np.ndarray
Activation = str | Callable[[Array], Array]

_EPSILON = 1e-7  # keras/src/backend/config.py: backend.epsilon() default, used for crossentropy clipping


def _f64(x: object) -> Array:
    return np.asarray(x, dtype=np.float64)


def _sigmoid(x: Array) -> Array:
    return 1.0 / (1.0 + np.exp(-x))


def _softmax(x: Array) -> Array:
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _log_softmax(x: Array) -> Array:
    shifted = x - np.max(x, axis=-1, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=-1, keepdims=True))


def _elu(x: Array, alpha: float = 1.0) -> Array:
    return np.where(x >= 0.0, x, alpha * np.expm1(x))


# Defaults from keras/src/activations/activations.py and keras/src/backend/numpy/nn.py:
# leaky_relu negative_slope=0.2; gelu approximate=False (exact erf form); hard_sigmoid = relu6(x + 3) / 6;
# selu constants are numpy/nn.py's; softmax/log_softmax over axis -1; softplus = log(1 + e^x).
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "linear": lambda x: x,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu6": lambda x: np.minimum(np.maximum(x, 0.0), 6.0),
    "leaky_relu": lambda x: np.maximum(x, 0.2 * x),
    "elu": _elu,
    "selu": lambda x: 1.0507009873554804934193349852946 * _elu(x, 1.6732632423543772848170429916717),
    "gelu": lambda x: 0.5 * x * (1.0 + erf(x / np.sqrt(2.0))),
    "sigmoid": _sigmoid,
    "hard_sigmoid": lambda x: np.minimum(np.maximum(x + 3.0, 0.0), 6.0) / 6.0,
    "tanh": np.tanh,
    "softmax": _softmax,
    "log_softmax": _log_softmax,
    "softplus": lambda x: np.logaddexp(x, 0.0),
    "softsign": lambda x: x / (1.0 + np.abs(x)),
    "silu": lambda x: x * _sigmoid(x),
    "exponential": np.exp,
    "hard_silu": lambda x: x * np.minimum(np.maximum(x + 3.0, 0.0), 6.0) / 6.0,  # activations.py: x * hard_sigmoid(x)
}


def _activation(activation: Activation) -> Callable[[Array], Array]:
    return ACTIVATIONS[activation] if isinstance(activation, str) else activation


# ---------------------------------------------------------------------------------------------------------------
# Core layers
# ---------------------------------------------------------------------------------------------------------------


def dense(x: Array, kernel: Array, bias: Array | None = None, *, activation: Activation = "linear") -> Array:
    """Dense: activation(x @ kernel + bias), contracting only the last axis so rank > 2 inputs work as in Keras."""
    y = np.tensordot(_f64(x), _f64(kernel), axes=([-1], [0]))
    if bias is not None:
        y = y + _f64(bias)
    return _activation(activation)(y)


def embedding(ids: Array, embeddings: Array) -> Array:
    """Embedding: a row gather, so ids of any shape gain a trailing feature axis."""
    return _f64(embeddings)[np.asarray(ids, dtype=np.int64)]


def embedding_mask(ids: Array) -> Array:
    """The mask an Embedding(mask_zero=True) emits: id 0 is padding (keras/src/layers/core/embedding.py)."""
    return np.asarray(ids) != 0


# ---------------------------------------------------------------------------------------------------------------
# Recurrent layers
# ---------------------------------------------------------------------------------------------------------------

Step = Callable[[Array, list[Array]], tuple[Array, list[Array]]]


def _run_rnn(
    step: Step,
    x: Array,
    states: list[Array],
    return_sequences: bool,
    return_state: bool,
    go_backwards: bool,
    mask: Array | None,
) -> Array | list[Array]:
    """The generic (non-cuDNN) Keras RNN loop shared by SimpleRNN, LSTM and GRU."""
    timesteps = x.shape[1]
    # keras/src/backend/tensorflow/rnn.py: go_backwards reverses inputs and mask together and the returned
    # sequence stays in processing order (reversed time); the "last" output is the one for input step 0.
    order = range(timesteps - 1, -1, -1) if go_backwards else range(timesteps)
    # keras/src/backend/tensorflow/rnn.py: the output carried into a masked step starts as zeros, not as the
    # initial state (the JAX/NumPy scan path uses states[0] instead; they differ only for a non-zero
    # initial_state whose first processed steps are masked). Its shape is the first step's output's.
    prev_output = np.zeros_like(step(x[:, order[0]], states)[0])
    outputs = []
    for t in order:
        output, new_states = step(x[:, t], states)
        if mask is not None:
            keep = mask[:, t, None]
            # keras/src/layers/rnn/rnn.py (zero_output_for_mask=False default) + backend rnn.py: a masked step
            # repeats the previous output...
            output = np.where(keep, output, prev_output)
            # ...and every state (LSTM h and c alike) keeps its previous value.
            new_states = [np.where(keep, new, old) for new, old in zip(new_states, states)]
        states, prev_output = new_states, output
        outputs.append(output)
    # keras/src/layers/rnn/rnn.py: `output` is the full sequence or the last one; states follow it.
    result = np.stack(outputs, axis=1) if return_sequences else outputs[-1]
    return [result, *states] if return_state else result


ReferenceCell = tuple[Step, list[int]]  # one step of a cell and the widths of its states


def simple_rnn_cell(
    kernel: Array, recurrent_kernel: Array, bias: Array | None = None, *, activation: Activation = "tanh"
) -> ReferenceCell:
    """SimpleRNNCell: h_t = act(x_t W + b + h_{t-1} U) (keras/src/layers/rnn/simple_rnn.py, SimpleRNNCell.call)."""
    kernel, recurrent_kernel = _f64(kernel), _f64(recurrent_kernel)
    act = _activation(activation)
    b = 0.0 if bias is None else _f64(bias)

    def step(x_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        h = act(x_t @ kernel + b + states[0] @ recurrent_kernel)
        return h, [h]

    return step, [recurrent_kernel.shape[0]]


def lstm_cell(
    kernel: Array,
    recurrent_kernel: Array,
    bias: Array | None = None,
    *,
    activation: Activation = "tanh",
    recurrent_activation: Activation = "sigmoid",
) -> ReferenceCell:
    """LSTMCell with Keras gate order i, f, c, o; states are [h, c]."""
    kernel, recurrent_kernel = _f64(kernel), _f64(recurrent_kernel)
    act, rec_act = _activation(activation), _activation(recurrent_activation)
    b = 0.0 if bias is None else _f64(bias)

    def step(x_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        h_tm1, c_tm1 = states
        z = x_t @ kernel + h_tm1 @ recurrent_kernel + b
        z_i, z_f, z_c, z_o = np.split(z, 4, axis=-1)
        # keras/src/layers/rnn/lstm.py (LSTMCell._compute_carry_and_output_fused, call):
        # c = f*c_{t-1} + i*act(z_c) with i, f, o = rec_act(z_i), rec_act(z_f), rec_act(z_o); h = o*act(c).
        c = rec_act(z_f) * c_tm1 + rec_act(z_i) * act(z_c)
        h = rec_act(z_o) * act(c)
        return h, [h, c]

    return step, [recurrent_kernel.shape[0]] * 2


def gru_cell(
    kernel: Array,
    recurrent_kernel: Array,
    bias: Array | None = None,
    *,
    activation: Activation = "tanh",
    recurrent_activation: Activation = "sigmoid",
    reset_after: bool = True,
) -> ReferenceCell:
    """GRUCell with Keras gate order z, r, h; bias is (2, 3*units) when reset_after, else (3*units,)."""
    kernel, recurrent_kernel = _f64(kernel), _f64(recurrent_kernel)
    act, rec_act = _activation(activation), _activation(recurrent_activation)
    units = recurrent_kernel.shape[0]
    if bias is None:
        input_bias, recurrent_bias = 0.0, 0.0
    elif reset_after:
        input_bias, recurrent_bias = _f64(bias)  # keras/src/layers/rnn/gru.py: row 0 input, row 1 recurrent
    else:
        input_bias, recurrent_bias = _f64(bias), 0.0
    u_zr, u_h = recurrent_kernel[:, : 2 * units], recurrent_kernel[:, 2 * units :]

    def step(x_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        h_tm1 = states[0]
        x_z, x_r, x_h = np.split(x_t @ kernel + input_bias, 3, axis=-1)
        if reset_after:
            rec = h_tm1 @ recurrent_kernel + recurrent_bias
            rec_z, rec_r, rec_h = np.split(rec, 3, axis=-1)
        else:
            rec_z, rec_r = np.split(h_tm1 @ u_zr, 2, axis=-1)
        z, r = rec_act(x_z + rec_z), rec_act(x_r + rec_r)
        # keras/src/layers/rnn/gru.py (GRUCell.call): reset_after=True gates the projected state,
        # r * (h_{t-1} U_h + b_rh); reset_after=False projects the gated state, (r * h_{t-1}) U_h.
        recurrent_h = r * rec_h if reset_after else (r * h_tm1) @ u_h
        hh = act(x_h + recurrent_h)
        h = z * h_tm1 + (1.0 - z) * hh  # keras/src/layers/rnn/gru.py: z keeps the old state
        return h, [h]

    return step, [units]


def _layer(
    cell: ReferenceCell,
    x: Array,
    return_sequences: bool,
    return_state: bool,
    go_backwards: bool,
    mask: Array | None,
    initial_state: Sequence[Array] | None,
) -> Array | list[Array]:
    step, widths = cell
    x = _f64(x)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
    if initial_state is None:
        states = [np.zeros((x.shape[0], width)) for width in widths]
    else:
        states = [_f64(s) for s in initial_state]
    return _run_rnn(step, x, states, return_sequences, return_state, go_backwards, mask)


def simple_rnn(
    x: Array,
    kernel: Array,
    recurrent_kernel: Array,
    bias: Array | None = None,
    *,
    activation: Activation = "tanh",
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    mask: Array | None = None,
    initial_state: Sequence[Array] | None = None,
) -> Array | list[Array]:
    """SimpleRNN: the SimpleRNNCell run over time."""
    cell = simple_rnn_cell(kernel, recurrent_kernel, bias, activation=activation)
    return _layer(cell, x, return_sequences, return_state, go_backwards, mask, initial_state)


def lstm(
    x: Array,
    kernel: Array,
    recurrent_kernel: Array,
    bias: Array | None = None,
    *,
    activation: Activation = "tanh",
    recurrent_activation: Activation = "sigmoid",
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    mask: Array | None = None,
    initial_state: Sequence[Array] | None = None,
) -> Array | list[Array]:
    """LSTM: the LSTMCell run over time."""
    cell = lstm_cell(kernel, recurrent_kernel, bias, activation=activation, recurrent_activation=recurrent_activation)
    return _layer(cell, x, return_sequences, return_state, go_backwards, mask, initial_state)


def gru(
    x: Array,
    kernel: Array,
    recurrent_kernel: Array,
    bias: Array | None = None,
    *,
    activation: Activation = "tanh",
    recurrent_activation: Activation = "sigmoid",
    reset_after: bool = True,
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    mask: Array | None = None,
    initial_state: Sequence[Array] | None = None,
) -> Array | list[Array]:
    """GRU: the GRUCell run over time."""
    cell = gru_cell(
        kernel,
        recurrent_kernel,
        bias,
        activation=activation,
        recurrent_activation=recurrent_activation,
        reset_after=reset_after,
    )
    return _layer(cell, x, return_sequences, return_state, go_backwards, mask, initial_state)


def stacked_rnn(
    x: Array,
    cells: Sequence[ReferenceCell],
    *,
    return_sequences: bool = False,
    return_state: bool = False,
    go_backwards: bool = False,
    mask: Array | None = None,
    initial_state: Sequence[Array] | None = None,
) -> Array | list[Array]:
    """RNN over a list of cells, stepped as keras/src/layers/rnn/stacked_rnn_cells.py (StackedRNNCells.call) does:
    at each step every cell in turn, each fed the output of the one before; the output is the last cell's.
    States are flat here, cell by cell (Keras groups them in one list per cell)."""

    def step(x_t: Array, states: list[Array]) -> tuple[Array, list[Array]]:
        new_states: list[Array] = []
        for cell_step, widths in cells:
            x_t, cell_states = cell_step(x_t, states[: len(widths)])
            states = states[len(widths) :]
            new_states += cell_states
        return x_t, new_states

    widths = [width for _, cell_widths in cells for width in cell_widths]
    return _layer((step, widths), x, return_sequences, return_state, go_backwards, mask, initial_state)


def bidirectional(
    x: Array,
    forward: Callable[..., Array | list[Array]],
    backward: Callable[..., Array | list[Array]],
    *,
    merge_mode: str | None = "concat",
    return_sequences: bool = False,
    return_state: bool = False,
    mask: Array | None = None,
) -> Array | list[Array]:
    """Bidirectional wrapper following keras/src/layers/rnn/bidirectional.py (Bidirectional.call)."""
    common = {"return_sequences": return_sequences, "return_state": return_state, "mask": mask}
    y = forward(x, go_backwards=False, **common)
    y_rev = backward(x, go_backwards=True, **common)  # bidirectional.py: the backward copy has go_backwards=True
    states: list[Array] = []
    if return_state:
        states = [*y[1:], *y_rev[1:]]  # bidirectional.py: forward states, then backward states
        y, y_rev = y[0], y_rev[0]
    if return_sequences:
        y_rev = y_rev[:, ::-1]  # bidirectional.py: backward sequence flipped back to input time order
        if mask is not None:
            # bidirectional.py forces zero_output_for_mask = return_sequences on both layers: masked steps
            # output zeros, not the carried output. States are unaffected, so zeroing afterwards is exact.
            keep = np.asarray(mask, dtype=bool)[..., None]
            y, y_rev = np.where(keep, y, 0.0), np.where(keep, y_rev, 0.0)
    if merge_mode is None:
        return [y, y_rev, *states]  # bidirectional.py: output + states, the two outputs unmerged
    merges: dict[str, Callable[[Array, Array], Array]] = {
        "concat": lambda a, b: np.concatenate([a, b], axis=-1),
        "sum": lambda a, b: a + b,
        "ave": lambda a, b: (a + b) / 2.0,
        "mul": lambda a, b: a * b,
    }
    output = merges[merge_mode](y, y_rev)
    return [output, *states] if return_state else output


def time_distributed(x: Array, fn: Callable[[Array], Array]) -> Array:
    """TimeDistributed: fn applied to each (batch, ...) timestep slice independently, restacked on axis 1."""
    x = _f64(x)
    return np.stack([fn(x[:, t]) for t in range(x.shape[1])], axis=1)


# ---------------------------------------------------------------------------------------------------------------
# Normalization, reshaping, merging, dropout
# ---------------------------------------------------------------------------------------------------------------


def batch_normalization(
    x: Array,
    gamma: Array | None,
    beta: Array | None,
    moving_mean: Array,
    moving_variance: Array,
    *,
    axis: int = -1,
    epsilon: float = 1e-3,
    momentum: float = 0.99,
    training: bool = False,
    center: bool = True,
    scale: bool = True,
    trainable: bool = True,
) -> tuple[Array, Array, Array]:
    """BatchNormalization; returns (y, new_moving_mean, new_moving_variance) since Keras updates them in place."""
    x = _f64(x)
    moving_mean, moving_variance = _f64(moving_mean), _f64(moving_variance)
    axis = axis % x.ndim
    reduce_axes = tuple(a for a in range(x.ndim) if a != axis)
    if training and trainable:  # batch_normalization.py (call): `if training and self.trainable`
        # keras/src/layers/normalization/batch_normalization.py (call, _moments): batch mean and biased
        # variance over all axes but `axis`; moving = moving * momentum + batch_stat * (1 - momentum).
        mean, variance = np.mean(x, axis=reduce_axes), np.var(x, axis=reduce_axes)
        moving_mean = moving_mean * momentum + mean * (1.0 - momentum)
        moving_variance = moving_variance * momentum + variance * (1.0 - momentum)
    else:
        mean, variance = moving_mean, moving_variance
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    y = (x - mean.reshape(shape)) / np.sqrt(variance.reshape(shape) + epsilon)
    if scale:
        y = y * _f64(gamma).reshape(shape)
    if center:
        y = y + _f64(beta).reshape(shape)
    return y, moving_mean, moving_variance


def flatten(x: Array) -> Array:
    """Flatten: keep the batch axis, C-order the rest (keras/src/layers/reshaping/flatten.py, channels_last)."""
    x = _f64(x)
    return x.reshape(x.shape[0], -1)


def reshape(x: Array, target_shape: Sequence[int]) -> Array:
    """Reshape: target_shape excludes the batch axis, as in keras.layers.Reshape."""
    x = _f64(x)
    return x.reshape(x.shape[0], *target_shape)


def repeat_vector(x: Array, n: int) -> Array:
    """RepeatVector: (batch, features) -> (batch, n, features)."""
    return np.repeat(_f64(x)[:, None, :], n, axis=1)


def concatenate(xs: Sequence[Array], axis: int = -1) -> Array:
    """Concatenate layer."""
    return np.concatenate([_f64(x) for x in xs], axis=axis)


def add(xs: Sequence[Array]) -> Array:
    """Add layer: elementwise sum of all inputs."""
    return sum((_f64(x) for x in xs[1:]), _f64(xs[0]))


def multiply(xs: Sequence[Array]) -> Array:
    """Multiply layer: elementwise product of all inputs."""
    out = _f64(xs[0])
    for x in xs[1:]:
        out = out * _f64(x)
    return out


def dropout(x: Array, keep_mask: Array, rate: float) -> Array:
    """Inverted dropout with a caller-drawn 0/1 keep mask, so both sides of a test see the same draw."""
    return _f64(x) * _f64(keep_mask) / (1.0 - rate)


# ---------------------------------------------------------------------------------------------------------------
# Losses (per sample, no reduction), keras/src/losses/losses.py + keras/src/backend/*/nn.py
# ---------------------------------------------------------------------------------------------------------------


def _log_probs(y_pred: Array, from_logits: bool) -> Array:
    if from_logits:
        return _log_softmax(y_pred)
    # keras/src/backend/tensorflow/nn.py (categorical_crossentropy): renormalise, clip to [eps, 1 - eps], log.
    y_pred = y_pred / np.sum(y_pred, axis=-1, keepdims=True)
    return np.log(np.clip(y_pred, _EPSILON, 1.0 - _EPSILON))


def sparse_categorical_crossentropy(y_true: Array, y_pred: Array, *, from_logits: bool = False) -> Array:
    """Crossentropy against integer class ids; a trailing size-1 axis on y_true is squeezed as in Keras."""
    y_pred = _f64(y_pred)
    y_true = np.asarray(y_true, dtype=np.int64)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]  # keras/src/losses/losses.py (sparse_categorical_crossentropy)
    log_prob = _log_probs(y_pred, from_logits)
    return -np.take_along_axis(log_prob, y_true[..., None], axis=-1)[..., 0]


def categorical_crossentropy(
    y_true: Array, y_pred: Array, *, from_logits: bool = False, label_smoothing: float = 0.0
) -> Array:
    """Crossentropy against one-hot (or soft) targets over the last axis."""
    y_true, y_pred = _f64(y_true), _f64(y_pred)
    if label_smoothing:
        # keras/src/losses/losses.py (categorical_crossentropy): y * (1 - ls) + ls / num_classes
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_pred.shape[-1]
    return -np.sum(y_true * _log_probs(y_pred, from_logits), axis=-1)


def binary_crossentropy(
    y_true: Array, y_pred: Array, *, from_logits: bool = False, label_smoothing: float = 0.0
) -> Array:
    """Elementwise binary crossentropy averaged over the last axis (keras/src/losses/losses.py)."""
    y_true, y_pred = _f64(y_true), _f64(y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing  # losses.py: smooth toward 0.5
    if from_logits:
        # keras/src/backend/tensorflow/nn.py: tf.nn.sigmoid_cross_entropy_with_logits, unclipped (the NumPy
        # backend clips sigmoid(logits) instead; they differ only for |logit| > ~16).
        bce = np.maximum(y_pred, 0.0) - y_pred * y_true + np.log1p(np.exp(-np.abs(y_pred)))
    else:
        # keras/src/backend/tensorflow/nn.py (binary_crossentropy): clip to [eps, 1 - eps] with eps = 1e-7.
        p = np.clip(y_pred, _EPSILON, 1.0 - _EPSILON)
        bce = -(y_true * np.log(p) + (1.0 - y_true) * np.log(1.0 - p))
    return np.mean(bce, axis=-1)


def _same_rank(y_true: Array, y_pred: Array) -> tuple[Array, Array]:
    # keras/src/losses/loss.py (squeeze_or_expand_to_same_rank): a rank-1 target meets a (batch, 1) prediction
    # by gaining a trailing axis; otherwise the side with an extra trailing size-1 axis is squeezed.
    if y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
        return (y_true[..., None], y_pred) if y_true.ndim == 1 else (y_true, y_pred[..., 0])
    if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
        return (y_true, y_pred[..., None]) if y_pred.ndim == 1 else (y_true[..., 0], y_pred)
    return y_true, y_pred


def mean_squared_error(y_true: Array, y_pred: Array) -> Array:
    """MSE averaged over the last axis."""
    y_true, y_pred = _same_rank(_f64(y_true), _f64(y_pred))
    return np.mean(np.square(y_true - y_pred), axis=-1)


def mean_absolute_error(y_true: Array, y_pred: Array) -> Array:
    """MAE averaged over the last axis."""
    y_true, y_pred = _same_rank(_f64(y_true), _f64(y_pred))
    return np.mean(np.abs(y_true - y_pred), axis=-1)
