"""Keras's model files in and out: `.keras` archives and legacy `.h5` files written by real Keras 3
(`tests/data/keras/make_fixtures.py`) load with Keras's predictions, convert to `.kd` and back, train, and export in
the layout Keras writes; what kdsl cannot honour, and damaged files, are refused with clear errors."""

from __future__ import annotations

import io
import json
import re
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import kdsl
from kdsl.cli import main
from kdsl.errors import KdslError
from kdsl.keras_files import read_keras_model
from kdsl.lang import load

h5py = pytest.importorskip("h5py")

DATA = Path(__file__).parent / "data" / "keras"
MODELS = ["embedding_lstm", "gru_simple_rnn", "bidirectional_stack", "mnist_lstm", "two_inputs_two_outputs",
          "masked", "encoder_decoder", "time_distributed", "gru_reset_before", "shared_layers", "settings",
          "stacked_cells", "stacked_states", "nested"]  # fmt: skip
FILES = [f"{name}.keras" for name in MODELS] + ["embedding_lstm.h5", "two_inputs_two_outputs.h5"]


def arrays(name: str, kind: str) -> list[np.ndarray]:
    """The fixture's inputs or Keras's outputs, in order."""
    data = np.load(DATA / f"{name}.npz")
    return [data[f"{kind}/{i}"] for i in range(sum(key.startswith(f"{kind}/") for key in data.files))]


def predict(model: kdsl.Model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """The model's outputs from kdsl's NumPy interpreter of the IR."""
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    outputs = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    return outputs if isinstance(outputs, list) else [outputs]


@pytest.mark.parametrize("file", FILES)
def test_keras_models_predict_what_keras_predicted(file):
    name = file.rsplit(".", 1)[0]
    model = kdsl.load_model(DATA / file)
    outputs = predict(model, arrays(name, "input"))
    expected = arrays(name, "output")
    assert len(outputs) == len(expected)
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", MODELS)
def test_converted_kd_text_is_checked_and_loads_back_to_the_same_graph(name, tmp_path, capsys):
    model = kdsl.load_model(DATA / f"{name}.keras")
    assert main(["convert", str(DATA / f"{name}.keras"), "-o", str(tmp_path / "m.kd"),
                 "--weights", str(tmp_path / "m.npz")]) == 0  # fmt: skip
    text = (tmp_path / "m.kd").read_text()
    assert text == model.to_kd()
    assert main(["check", str(tmp_path / "m.kd")]) == 0
    again = kdsl.Model.from_graph(load(text, "m.kd").model(model.name))
    assert again.to_kd() == text
    assert again.graph.structure() == model.graph.structure()  # a Sequential's `.kd` text loads as functional
    again.load_weights(tmp_path / "m.npz")
    for got, want in zip(again.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert "error" not in capsys.readouterr().err


def test_compile_settings_become_the_train_block():
    """Each fixture's compile configuration, as config.json holds it, is the loaded model's train block."""
    two = kdsl.load_model(DATA / "two_inputs_two_outputs.keras").graph.train
    saved = json.loads(zipfile.ZipFile(DATA / "two_inputs_two_outputs.keras").read("config.json"))["compile_config"]
    assert set(two.losses) == set(saved["loss"]) == {"priority", "department"}
    for output, term in two.losses.items():
        assert term.loss.name == saved["loss"][output]["config"]["name"]
        assert term.loss.args["from_logits"] is saved["loss"][output]["config"]["from_logits"]
        assert term.weight == pytest.approx(saved["loss_weights"][output])
    assert two.optimizer.name == "rmsprop"
    mnist = kdsl.load_model(DATA / "mnist_lstm.keras").graph.train
    optimizer = json.loads(zipfile.ZipFile(DATA / "mnist_lstm.keras").read("config.json"))["compile_config"]
    optimizer = optimizer["optimizer"]["config"]
    assert mnist.optimizer.name == "sgd"
    # Keras widens float32 settings (0.05 is written 0.05000000074505806); they are read as the float32 written
    assert repr(mnist.optimizer.args["learning_rate"]) == str(np.float32(optimizer["learning_rate"]))
    assert mnist.optimizer.args["momentum"] == pytest.approx(optimizer["momentum"])
    assert mnist.optimizer.args["nesterov"] is optimizer["nesterov"] is True
    assert [m.name for m in mnist.metrics[None]] == ["sparse_categorical_accuracy"]
    assert kdsl.load_model(DATA / "bidirectional_stack.keras").graph.train is None  # saved without compile


# --- export, read back by a reader of Keras's layout written here ---------------------------------

KERAS_CELLS = {"SimpleRNN": "SimpleRNNCell", "LSTM": "LSTMCell", "GRU": "GRUCell"}


def snake(name: str) -> str:
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def numbered(names: list[str]) -> list[str]:
    counts: dict[str, int] = {}
    out = []
    for name in names:
        out.append(name if name not in counts else f"{name}_{counts[name] + 1}")
        counts[name] = counts.get(name, -1) + 1
    return out


def vars_groups(layer: dict) -> list[str]:
    """Where Keras 3 keeps a serialized layer's variables, relative to its group (saving_lib's walk)."""
    class_name, config = layer["class_name"], layer["config"]
    if class_name in KERAS_CELLS:
        return ["cell/vars"]
    if class_name == "Bidirectional":
        inner = vars_groups(config["layer"])
        return [f"forward_layer/{g}" for g in inner] + [f"backward_layer/{g}" for g in inner]
    if class_name == "TimeDistributed":
        return [f"layer/{g}" for g in vars_groups(config["layer"])]
    if class_name == "RNN":
        cells = config["cell"]["config"]["cells"]
        return [f"cell/cells/{n}/vars" for n in numbered([snake(c["class_name"]) for c in cells])]
    return ["vars"]


def read_layers(h5, layers: list[dict], group: str, names: str, found: dict, seen: set[str]) -> None:
    """Each layer's weights by name (`outer/inner` in a nested model), from the groups Keras 3 gives them under
    `group`; `seen` collects the datasets read."""
    layers = [layer for layer in layers if layer["class_name"] != "InputLayer"]
    for layer, own in zip(layers, numbered([snake(layer["class_name"]) for layer in layers])):
        name = names + layer["config"]["name"]
        if layer["class_name"] in ("Functional", "Sequential"):
            read_layers(h5, layer["config"]["layers"], f"{group}{own}/layers/", f"{name}/", found, seen)
            continue
        found[name] = []
        for where in vars_groups(layer):
            variables = h5.get(f"{group}{own}/{where}", {})
            found[name] += [np.asarray(variables[str(i)]) for i in range(len(variables))]
            seen.update(f"{group}{own}/{where}/{i}" for i in range(len(variables)))


def read_keras_archive(path: Path) -> tuple[dict, dict[str, list[np.ndarray]]]:
    """config.json and each layer's weights by layer name (and the optimizer's variables as `optimizer`), read as
    Keras 3 reads a `.keras` archive."""
    with zipfile.ZipFile(path) as archive:
        assert json.loads(archive.read("metadata.json"))["keras_version"].startswith("3.")
        config = json.loads(archive.read("config.json"))
        h5 = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
    weights: dict[str, list[np.ndarray]] = {}
    seen: set[str] = set()
    read_layers(h5, config["config"]["layers"], "layers/", "", weights, seen)
    optimizer = h5.get("optimizer/vars", {})
    weights["optimizer"] = [np.asarray(optimizer[str(i)]) for i in range(len(optimizer))]
    seen.update(f"optimizer/vars/{i}" for i in range(len(optimizer)))
    stored = set()
    h5.visititems(lambda name, item: stored.add(name) if isinstance(item, h5py.Dataset) else None)
    assert stored == seen, "every weight in the file belongs to a layer"
    return config, weights


def layer_weights(model: kdsl.Model) -> dict[str, list[np.ndarray]]:
    """The model's weights by layer (`outer/inner` for a nested model's)."""
    weights = dict(zip(model.state.names, model.get_weights()))
    return {
        layer.name: [weights[f"{layer.name}/{p.name}"] for p in layer.params or []] for layer in model.graph.layers()
    }


@pytest.mark.parametrize("name", MODELS)
def test_trained_models_export_as_keras_writes_them(name, tmp_path):
    model = kdsl.load_model(DATA / f"{name}.keras")
    inputs = arrays(name, "input")
    targets = [np.random.default_rng(1).normal(size=y.shape).astype(np.float32) for y in arrays(name, "output")]
    before = model.get_weights()
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    model.fit(inputs if len(inputs) > 1 else inputs[0], targets if len(targets) > 1 else targets[0], epochs=1,
              batch_size=2, verbose=0)  # fmt: skip
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    model.save(tmp_path / "m.keras")
    config, weights = read_keras_archive(tmp_path / "m.keras")
    assert config["class_name"] in ("Sequential", "Functional")
    assert config["compile_config"]["optimizer"]["class_name"] == "SGD"
    steps = -(-len(inputs[0]) // 2)
    assert [int(weights["optimizer"][0]), float(weights["optimizer"][1])] == [steps, pytest.approx(0.01)]
    for layer, expected in layer_weights(model).items():
        for got, want in zip(weights[layer], expected, strict=True):
            np.testing.assert_array_equal(got, want)
    back = kdsl.load_model(tmp_path / "m.keras")
    assert back.to_kd().split("\ntrain ")[0].strip() == model.to_kd().split("\ntrain ")[0].strip()
    assert back.graph.train.optimizer.name == "sgd" and back.graph.train.losses[None].loss.name == "mean_squared_error"
    for got, want in zip(predict(back, inputs), predict(model, inputs)):
        np.testing.assert_array_equal(got, want)


def wrapped_model(seed: int) -> kdsl.Model:
    """A model with a Bidirectional, a TimeDistributed and an RNN over two cells, its weights drawn from `seed`."""
    x = kdsl.Input(shape=(5, 3))
    h = kdsl.layers.Bidirectional(kdsl.layers.LSTM(4, return_sequences=True))(x)
    h = kdsl.layers.TimeDistributed(kdsl.layers.Dense(3))(h)
    y = kdsl.layers.RNN([kdsl.layers.GRUCell(2), kdsl.layers.SimpleRNNCell(2)])(h)
    model = kdsl.Model(x, kdsl.layers.Dense(1)(y))
    model.compile(optimizer="sgd", loss="mse", seed=seed, target="numpy")
    return model


def test_keras_weights_files_round_trip_and_legacy_weights_load(tmp_path):
    model = wrapped_model(3)
    model.save_weights(tmp_path / "m.weights.h5")
    other = wrapped_model(4)
    assert any(not np.array_equal(a, b) for a, b in zip(model.get_weights(), other.get_weights()))
    other.load_weights(tmp_path / "m.weights.h5")
    for got, want in zip(other.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    keras_model = kdsl.load_model(DATA / "embedding_lstm.keras")
    legacy = kdsl.load_model(DATA / "embedding_lstm.h5")
    keras_model.set_weights([np.zeros_like(w) for w in keras_model.get_weights()])
    keras_model.load_weights(DATA / "embedding_lstm.h5")  # a legacy file's weights, layer by layer
    for got, want in zip(keras_model.get_weights(), legacy.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


def test_kd_file_converts_to_a_keras_archive(tmp_path, examples):
    out = tmp_path / "gru.keras"
    assert main(["convert", str(examples / "gru_stack.kd"), "--to", str(out)]) == 0
    model = kdsl.load_model_file(examples / "gru_stack.kd")
    config, weights = read_keras_archive(out)
    assert config["compile_config"]["loss"] == model.graph.train.losses[None].loss.name
    for layer, expected in layer_weights(model).items():
        for got, want in zip(weights[layer], expected, strict=True):
            np.testing.assert_array_equal(got, want)
    loaded = kdsl.load_model(out)  # the same layers; Keras names the output after its layer, `dense`
    assert [(layer.name, layer.kind.name, layer.config) for layer in loaded.graph.layers()] == [
        (layer.name, layer.kind.name, layer.config) for layer in model.graph.layers()
    ]
    assert loaded.graph.train.optimizer == model.graph.train.optimizer
    for got, want in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)


# --- refusals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("file", "said"),
    [
        ("refused_conv.keras", r"layer `conv1d\w*` \(Conv1D\): kdsl has no such layer"),
        ("refused_lambda.keras", r"layer `lambda` \(Lambda\): a Lambda layer holds Python code, which kdsl never runs"),
        ("refused_constraint.keras", r"layer `dense\w*` \(Dense\): .*`kernel_constraint` is not supported"),
    ],
)
def test_what_kdsl_cannot_honour_is_refused_naming_layer_class_and_reason(file, said, capsys):
    with pytest.raises(KdslError, match=said):
        kdsl.load_model(DATA / file)
    assert main(["convert", str(DATA / file)]) == 1
    err = capsys.readouterr().err
    assert re.search(said, err) and "Traceback" not in err


def test_partial_conversion_ends_the_model_before_what_is_refused(capsys):
    with pytest.raises(KdslError, match=r"\(Conv1D\)"):
        kdsl.load_model(DATA / "partial.keras")
    imported = read_keras_model(DATA / "partial.keras", kdsl.Model, partial=True)
    assert any("(Conv1D)" in reason for reason in imported.left_out)
    assert imported.model.graph.train is None
    outputs = predict(imported.model, arrays("partial", "input"))
    for got, want in zip(outputs, arrays("partial", "output"), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert main(["convert", str(DATA / "partial.keras"), "--partial"]) == 0
    out, err = capsys.readouterr()
    assert out == imported.model.to_kd() and "left out: layer `conv1d" in err


def rewritten(tmp_path: Path, source: str, change) -> Path:
    """A copy of a fixture archive with one member changed by `change(name, data) -> data`."""
    out = tmp_path / source
    with zipfile.ZipFile(DATA / source) as archive, zipfile.ZipFile(out, "w") as copy:
        for info in archive.infolist():
            copy.writestr(info.filename, change(info.filename, archive.read(info.filename)))
    return out


def edited_config(edit):
    def change(name: str, data: bytes) -> bytes:
        if name != "config.json":
            return data
        config = json.loads(data)
        edit(config)
        return json.dumps(config).encode()

    return change


def test_custom_objects_are_refused_without_importing_anything(tmp_path):
    def custom(config):
        config["config"]["layers"][1]["module"] = "os"
        config["config"]["layers"][1]["registered_name"] = "system"

    with pytest.raises(KdslError, match=r"layer `embedding\w*` \(Embedding\): a custom object"):
        kdsl.load_model(rewritten(tmp_path, "embedding_lstm.keras", edited_config(custom)))

    def initializer(config):
        config["config"]["layers"][3]["config"]["kernel_initializer"]["registered_name"] = "my>Init"

    with pytest.raises(KdslError, match=r"layer `dense\w*` \(Dense\): `kernel_initializer`: .*custom object"):
        kdsl.load_model(rewritten(tmp_path, "embedding_lstm.keras", edited_config(initializer)))


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (lambda name, data: b"{" if name == "config.json" else data, "`config.json` is not JSON"),
        (lambda name, data: b'{"keras_version": "2.15.0"}' if name == "metadata.json" else data, "Keras 2.15.0"),
        (lambda name, data: data[: len(data) // 2] if name == "model.weights.h5" else data, "not an HDF5 file"),
    ],
)
def test_damaged_archives_get_a_clear_error(tmp_path, change, said):
    with pytest.raises(KdslError, match=re.escape(said)):
        kdsl.load_model(rewritten(tmp_path, "masked.keras", change))


def dense_kernel_replaced(put: Callable[[h5py.File, str], None]) -> Callable[[str, bytes], bytes]:
    """A change for `rewritten`: the dense layer's kernel in `model.weights.h5` deleted, then `put(h5, its path)`."""

    def change(name: str, data: bytes) -> bytes:
        if name != "model.weights.h5":
            return data
        out = io.BytesIO(data)
        with h5py.File(out, "a") as h5:
            del h5["layers/dense/vars/0"]
            put(h5, "layers/dense/vars/0")
        return out.getvalue()

    return change


def test_weights_of_the_wrong_shape_are_refused(tmp_path):
    other_shape = dense_kernel_replaced(lambda h5, path: h5.create_dataset(path, data=np.zeros((2, 2), np.float32)))
    with pytest.raises(KdslError, match=r"`layers/dense/vars/0` is float32\[2, 2\], the model needs float32\[6, 3\]"):
        kdsl.load_model(rewritten(tmp_path, "embedding_lstm.keras", other_shape))


def test_members_are_refused_by_size_before_they_are_read(tmp_path, monkeypatch):
    from kdsl.keras_files import files

    monkeypatch.setattr(files, "TEXT_LIMIT", 1000)
    with pytest.raises(KdslError, match=r"`config.json` would unpack to [\d,]+ bytes, more than its 1,000"):
        kdsl.load_model(DATA / "masked.keras")


@pytest.mark.parametrize("kept", [0.0, 0.01, 0.1, 0.3, 0.5, 0.8, 0.95, 0.999])
def test_truncated_files_get_a_clear_error_never_a_traceback(tmp_path, kept):
    for source in ("masked.keras", "embedding_lstm.h5"):
        data = (DATA / source).read_bytes()
        damaged = tmp_path / source
        damaged.write_bytes(data[: int(kept * len(data))])
        with pytest.raises(KdslError, match=re.escape(str(damaged))):
            kdsl.load_model(damaged)


def test_saving_a_legacy_h5_model_is_refused(tmp_path):
    model = kdsl.load_model(DATA / "embedding_lstm.keras")
    with pytest.raises(KdslError, match="not the legacy HDF5 model file"):
        model.save(tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()


# --- real Keras, where it is installed --------------------------------------------------------------


def test_real_keras_loads_what_kdsl_writes_and_kdsl_what_keras_writes(tmp_path):
    keras = pytest.importorskip("keras")
    for name in MODELS:
        model = kdsl.load_model(DATA / f"{name}.keras")
        model.save(tmp_path / f"{name}.keras")
        inputs = arrays(name, "input")
        loaded = keras.models.load_model(tmp_path / f"{name}.keras")
        outputs = loaded.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
        for got, want in zip(outputs if isinstance(outputs, list) else [outputs], arrays(name, "output")):
            np.testing.assert_allclose(np.asarray(got), want, atol=1e-5, rtol=0)
    fresh = keras.Sequential([keras.Input((4, 2)), keras.layers.GRU(3, return_sequences=True),
                              keras.layers.LSTM(2), keras.layers.Dense(1)])  # fmt: skip
    fresh.save(tmp_path / "fresh.keras")
    x = np.random.default_rng(0).normal(size=(3, 4, 2)).astype(np.float32)
    np.testing.assert_allclose(predict(kdsl.load_model(tmp_path / "fresh.keras"), [x])[0],
                               fresh.predict(x, verbose=0), atol=1e-5, rtol=0)  # fmt: skip


def json_paths(value, path=()):
    """Every place in a JSON document, as the keys and indices that lead to it."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, item in items:
        yield from json_paths(item, (*path, key))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 1 << 40) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_any_edit_of_a_config_loads_or_gets_a_clear_error(data, tmp_path_factory):
    source = data.draw(st.sampled_from(["masked.keras", "two_inputs_two_outputs.keras", "bidirectional_stack.keras"]))
    config = json.loads(zipfile.ZipFile(DATA / source).read("config.json"))
    paths = list(json_paths(config))
    path = data.draw(st.sampled_from(paths[1:]))
    replacement = data.draw(JSON_VALUES)

    def edit(document):
        for key in path[:-1]:
            document = document[key]
        document[path[-1]] = replacement

    damaged = rewritten(tmp_path_factory.mktemp("fuzz"), source, edited_config(edit))
    try:
        kdsl.load_model(damaged)
    except KdslError as error:
        assert str(damaged) in error.message


@settings(max_examples=60, deadline=None)
@given(source=st.sampled_from(["masked.keras", "embedding_lstm.h5"]), flips=st.lists(st.tuples(st.floats(0, 1),
       st.integers(1, 255)), min_size=1, max_size=8))  # fmt: skip
def test_corrupted_bytes_load_or_get_a_clear_error(source, flips, tmp_path_factory):
    data = bytearray((DATA / source).read_bytes())
    for where, mask in flips:
        data[min(int(where * len(data)), len(data) - 1)] ^= mask
    damaged = tmp_path_factory.mktemp("flips") / source
    damaged.write_bytes(bytes(data))
    try:
        kdsl.load_model(damaged)
    except KdslError as error:
        assert str(damaged) in error.message


@pytest.mark.parametrize(
    ("name", "optimizer", "settings"),
    [
        ("bidirectional_stack", "Adam", {"learning_rate": 0.01, "amsgrad": True}),
        ("settings", "RMSprop", {"learning_rate": 0.01, "momentum": 0.5, "centered": True}),
        ("gru_reset_before", "Adagrad", {"learning_rate": 0.05}),
        ("mnist_lstm", "SGD", {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
    ],
)
def test_real_keras_goes_on_training_where_kdsl_stopped(name, optimizer, settings, tmp_path):
    """kdsl trains a few steps and saves; Keras loads the archive, optimizer state included, and its next step
    gives the weights kdsl's next step gives."""
    keras = pytest.importorskip("keras")
    model = kdsl.load_model(DATA / f"{name}.keras")
    x = arrays(name, "input")[0]
    y = np.random.default_rng(0).normal(size=arrays(name, "output")[0].shape).astype(np.float32)
    model.compile(optimizer=getattr(kdsl.optimizers, optimizer)(**settings), loss="mse", target="numpy")
    model.fit(x, y, epochs=3, batch_size=len(x), shuffle=False, verbose=0)
    model.save(tmp_path / "m.keras")
    model.train_on_batch(x, y)
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert int(loaded.optimizer.iterations.numpy()) == 3
    loaded.train_on_batch(x, y)
    for got, want in zip(loaded.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_compile_settings_kdsl_cannot_honour_are_refused_or_left_out_in_part(tmp_path):
    def weighted(config):
        config["compile_config"]["weighted_metrics"] = ["accuracy"]

    def decayed(config):
        config["compile_config"]["optimizer"]["config"]["weight_decay"] = 0.004

    for edit, said in ((weighted, "`weighted_metrics` has no place"), (decayed, "`weight_decay` is not supported")):
        damaged = rewritten(tmp_path, "embedding_lstm.keras", edited_config(edit))
        with pytest.raises(KdslError, match=said):
            kdsl.load_model(damaged)
        imported = read_keras_model(damaged, kdsl.Model, partial=True)
        assert imported.model.graph.train is None
        (reason,) = imported.left_out
        assert reason.startswith("the compile settings: ") and said in reason


def test_weights_kept_outside_the_file_are_not_read(tmp_path):
    """HDF5 can link to other files or keep a dataset's bytes in a raw file; kdsl reads only what is in the file."""
    secret = tmp_path / "secret.h5"
    with h5py.File(secret, "w") as h5:
        h5["data"] = np.ones((6, 3), np.float32)
    raw = tmp_path / "raw.bin"
    raw.write_bytes(np.ones(18, np.float32).tobytes())

    def link(h5: h5py.File, path: str) -> None:
        h5[path] = h5py.ExternalLink(str(secret), "/data")

    linked = dense_kernel_replaced(link)
    external = dense_kernel_replaced(
        lambda h5, path: h5.create_dataset(path, (6, 3), "f4", external=[(str(raw), 0, 72)])
    )
    with pytest.raises(KdslError, match=r"`layers/dense/vars/0` is not a weight"):
        kdsl.load_model(rewritten(tmp_path, "embedding_lstm.keras", linked))
    with pytest.raises(KdslError, match=r"`layers/dense/vars/0` keeps its data outside the file"):
        kdsl.load_model(rewritten(tmp_path, "embedding_lstm.keras", external))


def test_without_h5py_the_error_says_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "h5py", None)  # as if not installed
    with pytest.raises(KdslError, match=r"need the h5py package") as error:
        kdsl.load_model(DATA / "masked.keras")
    assert "kdsl[keras]" in error.value.hint


@pytest.mark.parametrize("name", ["embedding_lstm", "two_inputs_two_outputs"])
def test_weights_files_keras_wrote_load_into_the_same_model(name):
    model = kdsl.load_model(DATA / f"{name}.keras")
    model.set_weights([np.zeros_like(w) for w in model.get_weights()])
    model.load_weights(DATA / f"{name}.weights.h5")
    for got, want in zip(predict(model, arrays(name, "input")), arrays(name, "output"), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def test_a_keras_sequential_loads_as_a_sequential_with_its_train_block():
    """As Keras loads one: `layers` without the InputLayer, so that `layers[0]` is the first layer Keras lists."""
    with zipfile.ZipFile(DATA / "embedding_lstm.keras") as archive:
        config = json.loads(archive.read("config.json"))
    assert config["class_name"] == "Sequential"
    model = kdsl.load_model(DATA / "embedding_lstm.keras")
    assert isinstance(model, kdsl.Sequential)
    expected = [layer["config"]["name"] for layer in config["config"]["layers"] if layer["class_name"] != "InputLayer"]
    assert [layer.name for layer in model.layers] == expected
    assert model.graph.train is not None  # the compile settings, which `compile()` without arguments uses


@pytest.mark.parametrize(
    "optimizer",
    [
        kdsl.optimizers.Adam(learning_rate=0.01, amsgrad=True),
        kdsl.optimizers.RMSprop(learning_rate=0.01, momentum=0.5, centered=True),
        kdsl.optimizers.SGD(learning_rate=0.1, momentum=0.9, nesterov=True),
    ],
    ids=["adam-amsgrad", "rmsprop-centered", "sgd-nesterov"],
)
def test_a_loaded_model_trains_on_from_the_optimizer_state_saved(optimizer, tmp_path):
    """`load_model` compiles a Keras file's model and gives its optimizer the step, learning rate and slots the file
    holds: its next step is the one the model that saved it makes (that model's export matches Keras's own)."""
    model = kdsl.load_model(DATA / "embedding_lstm.keras", compile=False)
    inputs, outputs = arrays("embedding_lstm", "input")[0], arrays("embedding_lstm", "output")[0]
    labels = outputs.argmax(axis=-1)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", target="numpy")
    for _ in range(3):
        model.train_on_batch(inputs, labels)
    model.save(tmp_path / "m.keras")
    back = kdsl.load_model(tmp_path / "m.keras")
    assert back.optimizer.iterations == 3
    model.train_on_batch(inputs, labels)
    back.train_on_batch(inputs, labels)
    for got, want in zip(back.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_load_model_takes_keras_arguments_and_refuses_what_it_cannot_honour(tmp_path):
    model = kdsl.load_model(DATA / "embedding_lstm.keras", compile=False)
    with pytest.raises(KdslError, match="not compiled"):
        model.trainer  # noqa: B018
    assert kdsl.load_model(DATA / "embedding_lstm.keras").optimizer.name == "adam"  # its compile settings
    with pytest.raises(KdslError, match="custom_objects"):
        kdsl.load_model(DATA / "embedding_lstm.keras", custom_objects={"MyLayer": object})
    with pytest.raises(KdslError, match="safe_mode=False"):
        kdsl.load_model(DATA / "embedding_lstm.keras", safe_mode=False)
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    model.save(tmp_path / "m.kdz")
    with pytest.raises(KdslError, match="always loads compiled"):
        kdsl.load_model(tmp_path / "m.kdz", compile=False)


def test_compile_settings_kdsl_cannot_compile_name_the_file(tmp_path):
    """An empty loss for a model of two outputs: the error names the file, as every error reading one does."""

    def edit(document):
        document["compile_config"]["loss"] = {}

    damaged = rewritten(tmp_path, "two_inputs_two_outputs.keras", edited_config(edit))
    with pytest.raises(KdslError, match="no loss for output") as raised:
        kdsl.load_model(damaged)
    assert str(damaged) in raised.value.message
