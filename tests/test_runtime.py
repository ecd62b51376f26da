"""The Keras-like runtime: optimizers against their update rules, fit/evaluate/predict, bad input, datasets."""

from __future__ import annotations

import os
from pathlib import Path

import keras_reference as ref
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kdsl
from kdsl.datasets import idx, mnist
from kdsl.errors import KdslArgumentError, KdslError
from kdsl.lang import load
from kdsl.runtime import metrics, optimizers
from kdsl.runtime import update_rules as rules

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _steps(optimizer, grads):
    w = np.array([0.5, -1.0, 2.0], np.float32)
    for g in grads:
        optimizer.apply([w], [np.asarray(g, np.float32)])
    return w


GRADS = [[0.1, -0.2, 0.3], [0.05, 0.4, -0.1], [-0.3, 0.1, 0.2]]


def test_sgd_momentum_and_nesterov_follow_keras():
    for nesterov in (False, True):
        w, m = np.array([0.5, -1.0, 2.0]), np.zeros(3)
        for g in map(np.array, GRADS):
            m = 0.9 * m - 0.1 * g
            w = w + (0.9 * m - 0.1 * g if nesterov else m)
        np.testing.assert_allclose(_steps(optimizers.SGD(0.1, momentum=0.9, nesterov=nesterov), GRADS), w, rtol=1e-6)


def test_adam_follows_keras():
    w, m, v = np.array([0.5, -1.0, 2.0]), np.zeros(3), np.zeros(3)
    for t, g in enumerate(map(np.array, GRADS), 1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        w = w - 0.01 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(_steps(optimizers.Adam(0.01), GRADS), w, rtol=1e-5)


def test_rmsprop_and_adagrad_follow_keras():
    w, v, mom = np.array([0.5, -1.0, 2.0]), np.zeros(3), np.zeros(3)
    for g in map(np.array, GRADS):
        v = 0.9 * v + 0.1 * g * g
        mom = 0.5 * mom + 0.01 * g / np.sqrt(v + 1e-7)
        w = w - mom
    np.testing.assert_allclose(_steps(optimizers.RMSprop(0.01, momentum=0.5), GRADS), w, rtol=1e-5)
    w, acc = np.array([0.5, -1.0, 2.0]), np.full(3, 0.1)
    for g in map(np.array, GRADS):
        acc = acc + g * g
        w = w - 0.1 * g / np.sqrt(acc + 1e-7)
    np.testing.assert_allclose(_steps(optimizers.Adagrad(0.1), GRADS), w, rtol=1e-5)


@pytest.mark.parametrize(
    "optimizer",
    [
        optimizers.SGD(0.1),
        optimizers.SGD(0.1, momentum=0.9),
        optimizers.SGD(0.1, momentum=0.9, nesterov=True),
        optimizers.Adam(0.01),
        optimizers.Adam(0.01, amsgrad=True),
        optimizers.RMSprop(0.01),
        optimizers.RMSprop(0.01, centered=True),
        optimizers.RMSprop(0.01, momentum=0.5),
        optimizers.RMSprop(0.01, momentum=0.5, centered=True),
        optimizers.Adagrad(0.1),
    ],
    ids=lambda o: f"{o.name}-{'-'.join(f'{k}={v}' for k, v in o.hyper.items())}",
)
def test_each_flag_combination_runs_its_update_rule(optimizer):
    """The compiled loops branch on the flags outside each loop: every branch against the rule run in Python."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(37).astype(np.float32)
    expected, slots = w.copy(), {k: v.copy() for k, v in optimizer.create_slots(w).items()}
    rule = getattr(rules, optimizer.name)
    for step in range(3):
        g = rng.standard_normal(37).astype(np.float32)
        optimizer.apply([w], [g])
        scalars = optimizer.scalars(np.float32(optimizer.learning_rate))
        held = [slots.get(name, expected) for name in optimizer.slot_names]
        for i in range(w.size):
            rule(i, expected, g[i], *held, *scalars)
        np.testing.assert_allclose(w, expected, rtol=1e-6, err_msg=f"step {step}")


def test_optimizers_by_name_take_keras_defaults():
    adam = optimizers.get("adam")
    assert isinstance(adam, optimizers.Adam) and adam.learning_rate == 0.001
    assert optimizers.get("sgd").learning_rate == 0.01
    with pytest.raises(KdslError, match="did you mean"):
        optimizers.get("adamm")


@pytest.mark.parametrize(
    "cls, given, hint",
    [
        (optimizers.SGD, {"lr": 0.5}, "`learning_rate`"),  # Keras 3 refuses it too
        (optimizers.Adam, {"decay": 1e-4}, "schedule"),
        (optimizers.RMSprop, {"foo": 1}, "rho, momentum"),
        (optimizers.Adagrad, {"weight_decay": 0.01}, "kernel_regularizer"),
        (optimizers.SGD, {"momentum": -0.5}, "≥ 0"),
    ],
)
def test_optimizers_refuse_what_they_do_not_take(cls, given, hint):
    """An argument the optimizer does not take would train at other numbers than the user asked for."""
    with pytest.raises(KdslArgumentError) as error:
        cls(**given)
    assert hint in str(error.value)


def test_optimizer_arguments_reach_the_update():
    sgd = optimizers.SGD(0.5, momentum=0.9, clipnorm=1.0, name="mine")
    assert (sgd.learning_rate, sgd.hyper["momentum"], sgd.clipnorm) == (0.5, 0.9, 1.0)
    assert optimizers.CLASSES[sgd.config()["name"]](**{k: v for k, v in sgd.config().items() if k != "name"}).config() \
        == sgd.config()  # fmt: skip


CLASSIFIER = """model C(x: f32[batch, 4]) -> y {
    y = x |> dense(8, activation=relu) |> dense(3, activation=softmax)
}
train C { loss = sparse_categorical_crossentropy
          optimizer = adam(learning_rate=0.05)
          metrics = [accuracy] }"""


def _classifier():
    model = kdsl.Model.from_graph(load(CLASSIFIER, "c.kd").models["C"])
    model.compile(target="numpy", seed=1)
    return model


def _blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.standard_normal((n, 4)).astype(np.float32) * 0.3 + np.eye(3, 4)[y] * 2
    return x, y


def test_fit_learns_and_evaluate_predict_agree():
    model, (x, y) = _classifier(), _blobs()
    before = model.evaluate(x, y, return_dict=True)
    history = model.fit(x, y, batch_size=16, epochs=5, verbose=0, validation_split=0.25)
    after = model.evaluate(x, y, return_dict=True)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert history.epoch == [0, 1, 2, 3, 4] and len(history.history["loss"]) == 5
    assert after["loss"] < before["loss"] and after["accuracy"] > 0.9
    probs = model.predict(x)
    assert probs.shape == (120, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert after["accuracy"] == pytest.approx(np.mean(probs.argmax(1) == y))
    expected_loss = ref.sparse_categorical_crossentropy(y, probs).mean()
    assert after["loss"] == pytest.approx(expected_loss, rel=1e-4)


def test_fit_called_again_trains_again_as_in_keras():
    model, (x, y) = _classifier(), _blobs()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    before = model.get_weights()
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert history.epoch == [0]
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    assert model.fit(x, y, batch_size=16, epochs=3, verbose=0, initial_epoch=2).epoch == [2]


def test_weights_round_trip_in_keras_order():
    model = _classifier()
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(4, 8), (8,), (8, 3), (3,)]
    model.set_weights([w + 1 for w in weights])
    np.testing.assert_allclose(model.get_weights()[0], weights[0] + 1)
    with pytest.raises(KdslArgumentError, match=r"weight 2 \(`dense_1/kernel`\) must have shape \(8, 3\)"):
        model.set_weights([weights[0], weights[1], np.zeros((3, 8)), weights[3]])


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        (np.zeros((5, 3)), np.zeros(5, int), r"input `x` must have shape \(None, 4\), got \(5, 3\)"),
        (np.zeros((0, 4)), np.zeros(0, int), "input `x` is empty"),
        (np.full((5, 4), np.nan), np.zeros(5, int), "input `x` contains NaN"),
        (np.zeros((5, 4)), np.array([0, 1, 2, 3, 0]), r"class ids in \[0, 3\], but the output has 3 classes"),
        (np.zeros((5, 4)), np.zeros(4, int), "inputs have 5 samples but targets have 4"),
        ({"z": np.zeros((5, 4))}, np.zeros(5, int), "no input given for 'x'"),
    ],
)
def test_bad_arrays_are_refused_with_names_and_shapes(x, y, message):
    with pytest.raises(KdslArgumentError, match=message):
        _classifier().fit(x, y, verbose=0)


def test_headline_total_loss_is_the_weighted_sum(examples):
    model = kdsl.load_model_file(examples / "headline.kd")
    model.compile(target="numpy")
    rng = np.random.default_rng(0)
    x = {"words": rng.integers(0, 10000, (4, 100)), "extra": rng.standard_normal((4, 5))}
    y = {"main": rng.integers(0, 2, (4, 1)).astype(np.float32), "aux": rng.integers(0, 2, (4, 1)).astype(np.float32)}
    history = model.fit(x, y, batch_size=2, epochs=1, verbose=0)  # dict inputs and targets, two losses
    assert np.isfinite(history.history["loss"][0])
    total = model.evaluate(x, y, return_dict=True)["loss"]
    main, aux = model.predict(x)
    expected = ref.binary_crossentropy(y["main"], main).mean() + 0.2 * ref.binary_crossentropy(y["aux"], aux).mean()
    assert total == pytest.approx(expected, rel=1e-4)


def test_idx_reader_checksums_and_offline_error(tmp_path, monkeypatch):
    monkeypatch.setenv("KDSL_DATA", str(tmp_path))
    folder = tmp_path / "mnist"
    folder.mkdir()
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"not the real file")
    with pytest.raises(KdslError, match="corrupt"):
        mnist.DATASET.path("train-images-idx3-ubyte.gz")

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(idx.urllib.request, "urlopen", offline)
    with pytest.raises(KdslError, match="cannot download") as error:
        mnist.DATASET.path("t10k-labels-idx1-ubyte.gz")
    assert "KDSL_DATA" in error.value.hint
    assert not list(folder.glob("*.part"))


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="the shared MNIST files are not on this machine")
def test_mnist_loads_as_keras_returns_it(monkeypatch):
    monkeypatch.setenv("KDSL_DATA", os.fspath(SHARED_DATA))
    (x, y), (x_test, y_test) = mnist.load_data()
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (60000,) and set(np.unique(y)) == set(range(10))
    assert x_test.shape == (10000, 28, 28) and y_test.shape == (10000,)


def test_sample_and_class_weights_weigh_the_loss():
    """Keras: Σ w·loss / number of samples. Weight 0 on every class-2 sample is class_weight {2: 0}."""
    model, (x, y) = _classifier(), _blobs(48)
    weights = model.get_weights()
    plain = model.train_on_batch(x, y)
    model.set_weights(weights)
    per_sample = ref.sparse_categorical_crossentropy(y, model.predict(x))
    mask = (y != 2).astype(np.float32)
    history = model.fit(x, y, batch_size=48, epochs=1, verbose=0, shuffle=False, class_weight={2: 0.0})
    assert history.history["loss"][0] == pytest.approx((per_sample * mask).mean(), rel=1e-4)
    assert history.history["loss"][0] < plain
    model.set_weights(weights)
    again = model.fit(x, y, batch_size=48, epochs=2, verbose=0, shuffle=False, sample_weight=mask, initial_epoch=1)
    assert again.history["loss"][0] == pytest.approx(history.history["loss"][0], rel=1e-6)
    with pytest.raises(KdslArgumentError, match=r"sample_weight for `y` must have shape \(48,\)"):
        model.fit(x, y, verbose=0, sample_weight=np.ones(5))


def test_fit_takes_datasets_and_generators():
    x, y = _blobs(64)
    dataset = kdsl.data.Dataset.from_tensor_slices((x, y)).shuffle(seed=0).batch(16)
    assert len(dataset) == 4 and [len(b[0]) for b in dataset] == [16, 16, 16, 16]
    assert sorted(np.concatenate([b[1] for b in dataset]).tolist()) == sorted(y.tolist())
    model = _classifier()
    history = model.fit(dataset, epochs=3, verbose=0)
    assert history.params["steps"] == 4 and history.history["loss"][-1] < history.history["loss"][0]

    def batches():
        while True:
            yield x[:32], y[:32], np.ones(32)

    history = _classifier().fit(batches(), epochs=2, steps_per_epoch=5, verbose=0)
    assert history.params["steps"] == 5 and len(history.epoch) == 2
    with pytest.raises(KdslArgumentError, match="steps_per_epoch"):
        _classifier().fit(batches(), epochs=2, verbose=0)


def test_a_dataset_validates_every_epoch_and_steps_count_batches():
    """validation_data as a Dataset ran once and then failed; its validation_steps and evaluate's steps take the
    first batches, as Keras does."""
    x, y = _blobs(40)
    dataset = kdsl.data.Dataset.from_tensor_slices((x, y)).batch(10)
    model = _classifier()
    history = model.fit(dataset, epochs=3, validation_data=dataset, validation_steps=2, verbose=0)
    assert len(history.history["val_loss"]) == 3
    first_two = model.evaluate(x[:20], y[:20], batch_size=10, return_dict=True)
    assert model.evaluate(dataset, steps=2, verbose=0, return_dict=True) == first_two
    assert history.history["val_loss"][-1] == pytest.approx(first_two["loss"])


def test_evaluate_and_predict_take_datasets():
    model, (x, y) = _classifier(), _blobs(40)
    dataset = kdsl.data.Dataset.from_tensor_slices((x, y)).batch(16)
    assert model.evaluate(dataset, return_dict=True) == pytest.approx(model.evaluate(x, y, return_dict=True))
    np.testing.assert_allclose(model.predict(dataset), model.predict(x), rtol=1e-6)


def test_learning_rate_schedules_follow_keras():
    decay = optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    assert [decay(s) for s in (0, 10, 15)] == pytest.approx([0.1, 0.05, 0.1 * 0.5**1.5])
    stairs = optimizers.schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True)
    assert stairs(15) == pytest.approx(0.05)
    piecewise = optimizers.schedules.PiecewiseConstantDecay([2, 4], [1.0, 0.5, 0.1])
    assert [piecewise(s) for s in (0, 2, 3, 4, 9)] == [1.0, 1.0, 0.5, 0.5, 0.1]
    cosine = optimizers.schedules.CosineDecay(1.0, decay_steps=10, alpha=0.1)
    assert [cosine(s) for s in (0, 5, 10, 20)] == pytest.approx([1.0, 0.55, 0.1, 0.1])
    sgd = optimizers.SGD(piecewise)
    rates = []
    for _ in range(5):
        sgd.apply([np.zeros(1, np.float32)], [np.ones(1, np.float32)])
        rates.append(sgd.learning_rate)
    assert rates == [1.0, 1.0, 1.0, 0.5, 0.5]  # the rate of update k is schedule(k)


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 9), width=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_metric_means_match_keras_per_sample_definitions(batch, width, seed):
    """Each metric's batch mean is the mean over samples of Keras's per-sample value."""
    rng = np.random.default_rng(seed)
    y_pred = rng.uniform(0, 1, (batch, width)).astype(np.float32)
    y_true = rng.uniform(0, 1, (batch, width)).astype(np.float32)
    ids = rng.integers(0, width, batch).astype(np.int32)
    one_hot = np.eye(width, dtype=np.float32)[rng.integers(0, width, batch)]
    expected = {
        "sparse_categorical_accuracy": (ids, [float(ids[i] == np.argmax(y_pred[i])) for i in range(batch)]),
        "categorical_accuracy": (one_hot, [float(np.argmax(one_hot[i]) == np.argmax(y_pred[i])) for i in range(batch)]),
        "binary_accuracy": (y_true, [np.mean((y_pred[i] > 0.5) == (y_true[i] > 0.5)) for i in range(batch)]),
        "mean_squared_error": (y_true, [np.mean((y_true[i] - y_pred[i]) ** 2) for i in range(batch)]),
        "mean_absolute_error": (y_true, [np.mean(np.abs(y_true[i] - y_pred[i])) for i in range(batch)]),
    }
    for name, (target, per_sample) in expected.items():
        total, count = metrics.batch_totals(name, target, y_pred, None)
        assert count == batch and total == pytest.approx(np.sum(per_sample), rel=1e-5), name


def test_evaluate_weighs_the_loss_by_sample_weight_as_keras():
    """Keras: sum over the batch of loss·weight / batch size; metrics count every sample (weighted_metrics aside)."""
    model, (x, y) = _classifier(), _blobs(40)
    weights = np.random.default_rng(3).uniform(0, 2, 40).astype(np.float32)
    probs = model.predict(x).astype(np.float64)
    crossentropy = -np.log(probs[np.arange(40), y])
    logs = model.evaluate(x, y, batch_size=40, sample_weight=weights, return_dict=True)
    assert logs["loss"] == pytest.approx(np.mean(crossentropy * weights), rel=1e-5)
    assert logs["accuracy"] == pytest.approx(np.mean(probs.argmax(-1) == y))
    batches = kdsl.data.Dataset.from_tensor_slices((x, y, weights)).batch(40)
    assert model.evaluate(batches, return_dict=True)["loss"] == pytest.approx(logs["loss"], rel=1e-6)


def test_validation_freq_and_a_weighted_validation_split():
    model, (x, y) = _classifier(), _blobs(40)
    weights = np.linspace(0.5, 1.5, 40).astype(np.float32)
    history = model.fit(x, y, epochs=4, batch_size=10, validation_split=0.25, sample_weight=weights,
                        validation_freq=2, verbose=0)  # fmt: skip
    assert len(history.history["loss"]) == 4 and len(history.history["val_loss"]) == 2  # after epochs 2 and 4
    held_out = model.evaluate(x[30:], y[30:], sample_weight=weights[30:], return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(held_out["loss"], rel=1e-6)
    history = model.fit(x, y, epochs=3, validation_data=(x[:10], y[:10]), validation_freq=[1, 3], verbose=0)
    assert len(history.history["val_loss"]) == 2


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x, y: m.fit(x, y, batch_size=-5, verbose=0), "batch_size"),
        (lambda m, x, y: m.fit(x, y, batch_size=0, verbose=0), "batch_size"),
        (lambda m, x, y: m.fit(x, y, validation_split=1.0, verbose=0), "validation_split"),
        (lambda m, x, y: m.fit(x, y, validation_split=2.0, verbose=0), "validation_split"),
        (lambda m, x, y: m.fit(x, y, epochs=-2, verbose=0), "epochs"),
        (lambda m, x, y: m.evaluate(x, y, batch_size=-5), "batch_size"),
        (lambda m, x, y: m.predict(x, batch_size=0), "batch_size"),
        (lambda m, x, y: m.fit(x, y + 2**32, verbose=0), "beyond int32"),
        (lambda m, x, y: m.fit(x.astype(np.complex64), y, verbose=0), "must hold numbers"),
        (lambda m, x, y: m.fit(x.astype(str), y, verbose=0), "must hold numbers"),
        (lambda m, x, y: m.fit(x, y, sample_weight=np.full(len(y), np.nan), verbose=0), "NaN"),
        (lambda m, x, y: m.fit(x, y, class_weight={0: float("nan")}, verbose=0), "NaN"),
    ],
)
def test_training_on_nothing_or_on_bad_numbers_is_refused(call, message):
    """Each once trained on no batch and reported success, or went on with numbers it had changed."""
    model, (x, y) = _classifier(), _blobs(20)
    with pytest.raises(KdslArgumentError, match=message):
        call(model, x, y)


def test_token_ids_beyond_the_embedding_are_refused_up_front():
    model = kdsl.Model.from_graph(load("""model T(ids: i32[batch, 4]) -> y {
        y = ids |> embedding(10, 3) |> flatten |> dense(2, activation=softmax) }
    train T { loss = sparse_categorical_crossentropy }""", "t.kd").models["T"])  # fmt: skip
    model.compile(target="numpy")
    with pytest.raises(KdslArgumentError, match=r"ids 0\.\.9"):
        model.predict(np.full((2, 4), 10, np.int32))


@pytest.mark.parametrize(
    "loss, labels, hint",
    [("categorical_crossentropy", np.arange(4) % 3, "sparse_categorical_crossentropy"),
     ("sparse_categorical_crossentropy", np.eye(3)[np.arange(4) % 3], "categorical_crossentropy")],
)  # fmt: skip
def test_labels_of_the_other_crossentropy_get_a_hint(loss, labels, hint):
    x = kdsl.Input(shape=(4,))
    model = kdsl.Model(x, kdsl.layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer="sgd", loss=loss, target="numpy")
    with pytest.raises(KdslArgumentError) as error:
        model.fit(np.ones((4, 4), np.float32), labels, verbose=0)
    assert hint in error.value.hint
