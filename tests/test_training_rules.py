"""The rules that only training runs, each against Keras's definition written out here: dropout's scaling,
AMSGrad's second moment, BatchNormalization's moving statistics and weight penalties in the loss.

The other tests compare backends that run the same IR, or a compiled rule with the same rule in Python; a rule
that is wrong everywhere passes those. These do not share code with what they check."""

from __future__ import annotations

import numpy as np
import pytest

import kdsl
from kdsl import layers as L
from kdsl import optimizers
from kdsl.lang import load
from kdsl.pipeline import compile_model


@pytest.mark.parametrize("rate", [0.25, 0.6])
def test_dropout_keeps_units_scaled_by_one_over_keep(rate):
    """Keras: `x * mask / (1 - rate)`, so each output is 0 or 1/(1-rate), and their mean is 1."""
    text = f"""model Drop(x: f32[batch, 64]) -> y {{
    y = x |> dropout({rate})
}}
train Drop {{
    loss = mse
    optimizer = sgd(learning_rate=0.1)
}}"""
    compiled = compile_model(load(text).models["Drop"], target="cpu")
    ones = np.ones((256, 64), np.float32)
    compiled.train_step([ones], [np.zeros_like(ones)])
    (y,) = compiled.outputs
    values = np.unique(y)
    np.testing.assert_allclose(values, [0.0, 1 / (1 - rate)], rtol=1e-6)
    assert abs(float(y.mean()) - 1.0) < 0.05
    assert abs(float((y == 0).mean()) - rate) < 0.02


def test_amsgrad_divides_by_the_largest_second_moment_so_far():
    """Keras 3's Adam with `amsgrad=True`, in float64, on gradients that shrink 30-fold between steps (so the
    running maximum of v differs from v)."""
    lr, beta_1, beta_2, epsilon = 0.01, 0.9, 0.999, 1e-7
    rng = np.random.default_rng(0)
    w = rng.standard_normal(50).astype(np.float32)
    optimizer = optimizers.Adam(lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon, amsgrad=True)
    expected, m, v, v_hat = w.astype(np.float64), np.zeros(50), np.zeros(50), np.zeros(50)
    for step in range(1, 5):
        g = (rng.standard_normal(50) * 30.0 ** -(step - 1)).astype(np.float32)
        optimizer.apply([w], [g])
        alpha = lr * np.sqrt(1 - beta_2**step) / (1 - beta_1**step)
        m += (g - m) * (1 - beta_1)
        v += (g.astype(np.float64) ** 2 - v) * (1 - beta_2)
        v_hat = np.maximum(v_hat, v)
        expected -= alpha * m / (np.sqrt(v_hat) + epsilon)
        np.testing.assert_allclose(w, expected, rtol=2e-5, atol=1e-6)


def test_batch_normalization_moving_statistics_after_a_training_step():
    """Keras: moving = moving·momentum + batch·(1 - momentum), with the batch's biased variance."""
    momentum = 0.9
    x_in = kdsl.Input(shape=(5,))
    model = kdsl.Model(x_in, L.BatchNormalization(momentum=momentum)(x_in))
    model.compile(optimizer=optimizers.SGD(0.01), loss="mse")
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(16, 5)).astype(np.float32)
    model.train_on_batch(x, np.zeros_like(x))
    moving_mean, moving_variance = model.get_weights()[2:]
    np.testing.assert_allclose(moving_mean, x.mean(0) * (1 - momentum), rtol=1e-5)
    np.testing.assert_allclose(moving_variance, momentum + x.astype(np.float64).var(0) * (1 - momentum), rtol=1e-5)


@pytest.mark.parametrize(
    ("regularizer", "penalty"),
    [
        (kdsl.regularizers.L2(0.03), lambda k: 0.03 * np.sum(k**2)),
        ("l2", lambda k: 0.01 * np.sum(k**2)),
        (kdsl.regularizers.l1(0.02), lambda k: 0.02 * np.sum(np.abs(k))),
        (kdsl.regularizers.L1L2(l1=0.01, l2=0.02), lambda k: 0.01 * np.sum(np.abs(k)) + 0.02 * np.sum(k**2)),
    ],
    ids=["L2", "l2-string", "l1", "L1L2"],
)
def test_a_weight_penalty_adds_keras_s_sum_to_the_loss(regularizer, penalty):
    """Keras: `L2(l2)` adds `l2 · Σw²` (no factor ½), `L1(l1)` adds `l1 · Σ|w|`, to the loss a step reports."""
    x_in = kdsl.Input(shape=(4,))
    model = kdsl.Model(x_in, L.Dense(3, use_bias=False, kernel_regularizer=regularizer)(x_in))
    model.compile(optimizer=optimizers.SGD(0.01), loss="mse")
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((4, 3)).astype(np.float32)
    model.set_weights([kernel])
    x, y = rng.standard_normal((8, 4)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)
    loss = model.train_on_batch(x, y)
    k64 = kernel.astype(np.float64)
    np.testing.assert_allclose(loss, np.mean((x.astype(np.float64) @ k64 - y) ** 2) + penalty(k64), rtol=1e-5)
