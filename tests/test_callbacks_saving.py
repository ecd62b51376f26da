"""Callbacks; and saving: a model saved mid-training and resumed in a new process ends as an uninterrupted run."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kdsl
from kdsl import callbacks
from kdsl.files import npz_bytes
from kdsl.lang import load

SOURCE = """model C(x: f32[batch, 4]) -> y {
    y = x |> dense(8, activation=relu) |> dropout(0.3) |> dense(3, activation=softmax)
}
train C { loss = sparse_categorical_crossentropy
          optimizer = adam(learning_rate=0.02)
          metrics = [accuracy] }"""


def _model(seed: int = 1) -> kdsl.Model:
    model = kdsl.Model.from_graph(load(SOURCE, "c.kd").models["C"])
    model.compile(target="numpy", seed=seed)
    return model


def _data(n: int = 96):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, n)
    return rng.standard_normal((n, 4)).astype(np.float32) * 0.5 + np.eye(3, 4)[y], y


RESUME = """
import sys, numpy as np, kdsl
model = kdsl.load_model(sys.argv[1])
data = np.load(sys.argv[2])
model.fit(data["x"], data["y"], batch_size=16, epochs=3, verbose=0, initial_epoch=1)
np.savez(sys.argv[3], *model.get_weights())
"""


def test_resume_in_a_new_process_matches_an_uninterrupted_run(tmp_path):
    x, y = _data()
    straight = _model()
    straight.fit(x, y, batch_size=16, epochs=3, verbose=0)

    first = _model()
    first.fit(x, y, batch_size=16, epochs=1, verbose=0)
    first.save(tmp_path / "c.kdz")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    command = [
        sys.executable,
        "-c",
        RESUME,
        str(tmp_path / "c.kdz"),
        str(tmp_path / "data.npz"),
        str(tmp_path / "w.npz"),
    ]
    subprocess.run(command, check=True, timeout=300)
    with np.load(tmp_path / "w.npz") as resumed:
        for i, expected in enumerate(straight.get_weights()):
            np.testing.assert_array_equal(resumed[f"arr_{i}"], expected)


def test_weights_files_round_trip(tmp_path):
    model, other = _model(1), _model(2)
    model.save_weights(tmp_path / "c.npz")
    other.load_weights(tmp_path / "c.npz")
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.glob(".*.tmp"))


def test_checkpoint_keeps_only_improvements(tmp_path):
    x, y = _data()
    seen = []

    class Losses(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append(logs["val_loss"])

    path = tmp_path / "best-{epoch}.kdz"
    checkpoint = callbacks.ModelCheckpoint(str(path), monitor="val_loss", save_best_only=True)
    _model().fit(x, y, batch_size=16, epochs=4, verbose=0, validation_split=0.25, callbacks=[Losses(), checkpoint])
    improving = [e + 1 for e, v in enumerate(seen) if v < min(seen[:e], default=np.inf)]
    assert sorted(int(p.stem.split("-")[1]) for p in tmp_path.glob("best-*.kdz")) == improving
    assert kdsl.load_model(tmp_path / f"best-{improving[-1]}.kdz").evaluate(x, y)[0] < 2.0


def test_early_stopping_restores_the_best_weights():
    x, y = _data()
    model = _model()
    model.optimizer.learning_rate = 0.5  # large steps, so validation loss soon gets worse
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    best = []

    class Keep(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            best.append((logs["val_loss"], model.get_weights()))

    history = model.fit(x, y, batch_size=8, epochs=30, verbose=0, validation_split=0.25, callbacks=[Keep(), stop])
    assert len(history.epoch) < 30 and stop.stopped_epoch == history.epoch[-1]
    losses = [loss for loss, _ in best]
    expected = best[int(np.argmin(losses))][1]
    for a, b in zip(model.get_weights(), expected):
        np.testing.assert_array_equal(a, b)


def test_learning_rate_schedule_and_plateau():
    x, y = _data()
    model = _model()
    schedule = callbacks.LearningRateScheduler(lambda epoch, lr: 0.1 / (epoch + 1))
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[schedule])
    assert history.history["learning_rate"] == pytest.approx([0.1, 0.05, 0.1 / 3])

    plateau = callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=1, min_delta=10.0)
    model.optimizer.learning_rate = 0.01
    model.fit(x, y, epochs=3, verbose=0, initial_epoch=0, callbacks=[plateau])
    assert model.optimizer.learning_rate == pytest.approx(0.01 * 0.5**2)  # no epoch improves by 10


def test_terminate_on_nan_stops_at_once():
    x, y = _data()
    model = _model()
    model.optimizer.learning_rate = 1e30
    with np.errstate(all="ignore"):  # the point is that the numbers overflow
        history = model.fit(x, y, batch_size=8, epochs=5, verbose=0, callbacks=[callbacks.TerminateOnNaN()])
    assert len(history.epoch) == 1
    assert not np.isfinite(history.history["loss"][0])


def test_csv_and_json_lines_logs(tmp_path):
    x, y = _data()
    csv_path, json_path = tmp_path / "log.csv", tmp_path / "log.jsonl"
    loggers = [callbacks.CSVLogger(str(csv_path)), callbacks.JSONLinesLogger(str(json_path))]
    history = _model().fit(x, y, epochs=2, verbose=0, callbacks=loggers)
    rows = list(csv.DictReader(csv_path.open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert [float(r["loss"]) for r in rows] == pytest.approx(history.history["loss"])
    lines = [json.loads(line) for line in json_path.read_text().splitlines()]
    assert [line["accuracy"] for line in lines] == pytest.approx(history.history["accuracy"])


def test_progress_line_has_the_keras_format(capsys):
    x, y = _data()
    _model().fit(x, y, batch_size=32, epochs=1, verbose=2)
    out = capsys.readouterr().out
    assert out.startswith("Epoch 1/1\n3/3 [==============================] - ")
    assert "ms/step - loss: " in out and " - accuracy: " in out


def test_a_schedule_and_weights_only_checkpoints_survive_saving(tmp_path):
    x, y = _data()
    model = _model()
    schedule = kdsl.optimizers.schedules.ExponentialDecay(0.05, decay_steps=4, decay_rate=0.5)
    model.compile(optimizer=kdsl.optimizers.Adam(schedule), target="numpy")
    checkpoint = callbacks.ModelCheckpoint(str(tmp_path / "w{epoch}.npz"), save_weights_only=True)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[checkpoint])
    assert sorted(p.name for p in tmp_path.glob("w*.npz")) == ["w1.npz", "w2.npz"]
    model.save(tmp_path / "m.kdz")
    restored = kdsl.load_model(tmp_path / "m.kdz")
    assert restored.optimizer.schedule.config() == schedule.config()
    assert restored.optimizer.iterations == model.optimizer.iterations == 12
    other = _model(5)
    other.load_weights(tmp_path / "w2.npz")
    for a, b in zip(other.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_an_archive_in_the_former_weight_order_loads_by_name(tmp_path):
    """Archives from before functional models took Keras's weight order list their weights in call order: loading
    goes by name, and each optimizer slot follows its weight."""
    from kdsl import layers as L

    x = kdsl.Input(shape=(4,))
    model = kdsl.Model(x, [L.Dense(2, name="a")(x), L.Dense(1, name="b")(L.Dense(3, name="c")(x))])
    model.compile(optimizer="adam", loss="mse", target="numpy")
    rng = np.random.default_rng(0)
    inputs, targets = rng.normal(size=(8, 4)), [rng.normal(size=(8, 2)), rng.normal(size=(8, 1))]
    model.fit(inputs, targets, batch_size=8, verbose=0)
    path = tmp_path / "m.kdz"
    model.save(path)
    with zipfile.ZipFile(path) as archive:  # rewrite it as the former order (a, c, b) had it
        files = {name: archive.read(name) for name in archive.namelist()}
    state = json.loads(files["state.json"])
    assert state["param_names"][:2] == ["c/kernel", "c/bias"]
    former = [*state["param_names"][2:4], *state["param_names"][:2], *state["param_names"][4:]]
    slots = np.load(io.BytesIO(files["optimizer.npz"]))
    moved = {f"{former.index(state['param_names'][int(k.split('/')[0])])}/{k.split('/', 1)[1]}": v
             for k, v in slots.items()}  # fmt: skip
    state["param_names"] = former
    files["state.json"], files["optimizer.npz"] = json.dumps(state).encode(), npz_bytes(moved)
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    loaded = kdsl.load_model(path)
    for expected, actual in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(expected, actual)
    for expected, actual in zip(model.optimizer.slots, loaded.optimizer.slots, strict=True):
        assert expected.keys() == actual.keys()
        for key in expected:
            np.testing.assert_array_equal(expected[key], actual[key])


@pytest.mark.parametrize("name", ["model.h5", "w.h5"])
def test_legacy_keras_file_names_are_refused_not_filled_with_our_format(tmp_path, name):
    from kdsl import layers as L
    from kdsl.errors import KdslError

    x = kdsl.Input(shape=(3,))
    model = kdsl.Model(x, L.Dense(2)(x))
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    save = model.save_weights if name.startswith("w.") else model.save
    with pytest.raises(KdslError, match=r"\.keras|\.weights\.h5"):
        save(tmp_path / name)
    assert not (tmp_path / name).exists()


def _scalars(directory) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of the event files in `directory`: TFRecord frames (length, its CRC, data, CRC) of Events."""
    from tensorboardX.proto import event_pb2

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            length = int.from_bytes(data[at : at + 8], "little")
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
            at += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_tensorboard_writes_the_scalars_keras_writes(tmp_path):
    pytest.importorskip("tensorboardX")
    model, (x, y) = _model(), _data(64)
    board = callbacks.TensorBoard(str(tmp_path / "logs"), update_freq=2)
    history = model.fit(x, y, batch_size=16, epochs=2, validation_split=0.25, callbacks=[board], verbose=0)
    train, validation = _scalars(tmp_path / "logs" / "train"), _scalars(tmp_path / "logs" / "validation")
    assert [v for _, v in train["epoch_loss"]] == pytest.approx(history.history["loss"])
    assert [v for _, v in validation["epoch_loss"]] == pytest.approx(history.history["val_loss"])
    assert [step for step, _ in train["epoch_loss"]] == [0, 1] and "epoch_learning_rate" in train
    assert [step for step, _ in train["batch_loss"]] == [2, 4, 6]  # every second of 2 x 3 batches, counted from 1


def test_tensorboard_refuses_what_it_does_not_write():
    with pytest.raises(kdsl.KdslError, match="histogram_freq"):
        callbacks.TensorBoard(histogram_freq=1)


@settings(max_examples=40, deadline=None)
@given(
    names=st.lists(
        st.one_of(st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,7}", fullmatch=True), st.text(max_size=8)),
        min_size=3,
        max_size=3,
    ),
    rate=st.floats(allow_nan=True, allow_infinity=True, width=64),
)
def test_whatever_is_saved_loads(tmp_path_factory, names, rate):
    """Names and settings kdsl accepts save and load back; the others are refused when given, never at loading."""
    from kdsl import layers as L
    from kdsl.errors import KdslArgumentError

    model_name, input_name, layer_name = names
    try:
        x = kdsl.Input(shape=(3,), name=input_name)
        model = kdsl.Model(x, L.Dense(2, name=layer_name)(x), name=model_name)
        model.compile(optimizer=kdsl.optimizers.SGD(rate), loss="mse", target="numpy")
    except KdslArgumentError:
        return
    path = tmp_path_factory.mktemp("saved") / "m.kdz"
    model.save(path)
    loaded = kdsl.load_model(path)
    assert (loaded.name, loaded.input_names, loaded.optimizer.learning_rate) == (model_name, [input_name], rate)
    assert [layer.name for layer in loaded.layers][1:] == [layer_name]


def test_the_progress_bar_is_one_line_an_epoch_off_a_terminal(capsys):
    """Captured output is no terminal: no redraws with carriage returns, one line an epoch, as Keras's bar."""
    model, (x, y) = _model(), _data(64)
    model.fit(x, y, batch_size=4, epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert "\r" not in out and out.count("/16 [") == 2
