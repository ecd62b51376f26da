"""The data `kdsl train`, `evaluate` and `predict` read: the .npz layout, a train block's `data`, the shipped
datasets, and the errors that name the file, the key and what the model expects before anything compiles."""

from __future__ import annotations

import numpy as np
import pytest

from kdsl import datasets
from kdsl.catalogue.datasets import DATASETS
from kdsl.cli import main
from kdsl.datasets.headlines import Headlines
from kdsl.errors import KdslArgumentError
from kdsl.lang import load, load_file
from kdsl.lang.format import to_kd

PAIR = """
model Pair(words: i32[batch, 6], extra: f32[batch, 3]) -> (main, aux) {
    code = embedding(words, 20, 4) |> simple_rnn(5)
    aux  = dense(code, 1, activation=sigmoid)
    main = concatenate(code, extra) |> dense(1, activation=sigmoid)
}

train Pair {
    data       = "pair.npz"
    loss main  = binary_crossentropy
    loss aux   = binary_crossentropy, weight 0.5
    optimizer  = adam(learning_rate=0.01)
    metrics    = [accuracy]
    batch_size = 16
    epochs     = 2
}
"""


def pair_arrays(train: int = 48, test: int = 16) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", train), ("test", test)):
        arrays[f"x_{split}/words"] = rng.integers(0, 20, (count, 6)).astype(np.int32)
        arrays[f"x_{split}/extra"] = rng.standard_normal((count, 3)).astype(np.float32)
        arrays[f"y_{split}/main"] = rng.integers(0, 2, (count, 1)).astype(np.float32)
        arrays[f"y_{split}/aux"] = rng.integers(0, 2, count).astype(np.float32)  # (N,) for (N, 1): as Keras takes
    return arrays


@pytest.fixture
def pair(tmp_path):
    """The two-input, two-output model's file, its data beside it as its train block names it."""
    np.savez(tmp_path / "pair.npz", **pair_arrays())
    (tmp_path / "pair.kd").write_text(PAIR)
    return tmp_path


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_two_input_two_output_model_trains_evaluates_and_predicts_by_name(pair, capsys):
    saved = pair / "pair.kdz"
    code, out, _ = run(capsys, "train", pair / "pair.kd", "--target", "numpy", "--verbose", "0", "--out", saved)
    assert code == 0
    assert f"data: {pair / 'pair.npz'} (the train block's)" in out
    assert "main_accuracy" in out and "aux_accuracy" in out
    code, _, err = run(capsys, "evaluate", saved)  # the saved block's path was relative to a .kd file it lost
    assert code == 1 and "relative to the .kd file" in err and "--data" in err
    code, out, _ = run(capsys, "evaluate", saved, "--data", pair / "pair.npz")
    assert code == 0 and f"data: {pair / 'pair.npz'} (--data)" in out and "aux_loss" in out
    code, out, _ = run(capsys, "predict", saved, "--data", pair / "pair.npz", "--out", pair / "p.npz")
    assert code == 0 and "16 predictions of main, aux" in out
    with np.load(pair / "p.npz") as predictions:
        assert sorted(predictions.files) == ["aux", "main"]
        assert predictions["main"].shape == predictions["aux"].shape == (16, 1)
        assert ((predictions["main"] >= 0) & (predictions["main"] <= 1)).all()
    code, _, err = run(capsys, "predict", saved, "--data", pair / "pair.npz", "--out", pair / "p.npy")
    assert code == 1 and "2 outputs" in err and "p.npz" in err


def _without(key):
    def change(arrays):
        del arrays[key]

    return change


def _setting(key, value):
    def change(arrays):
        arrays[key] = value

    return change


def _single_form(arrays):
    arrays["x_train"] = arrays.pop("x_train/words")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (_without("y_test/aux"), ["has no `y_test/aux`", "target `aux`", "f32[batch, 1]"]),
        (_setting("x_train/wrds", np.zeros((48, 6), np.int32)), ["`x_train/wrds`", "no input `wrds`", "`words`?"]),
        (_setting("x_train/extra", np.zeros((48, 4), np.float32)), ["`x_train/extra` holds float32 (48, 4)",
                                                                    "input `extra` is f32[batch, 3]"]),
        (_setting("x_train/words", np.zeros((48, 6), np.float32)), ["`x_train/words` holds float32", "(integers)"]),
        (_setting("y_train/main", np.zeros((47, 1), np.float32)), ["different numbers of samples"]),
        (_single_form, ["one array `x_train`", "2 inputs", "x_train/words, x_train/extra"]),
        (_setting("labels", np.zeros(48)), ["`labels`", "does not read", "x_train/<input>"]),
    ],
)  # fmt: skip
def test_npz_mistakes_name_the_file_the_key_and_what_the_model_expects(pair, capsys, change, expected):
    arrays = pair_arrays()
    change(arrays)
    np.savez(pair / "pair.npz", **arrays)
    code, _, err = run(capsys, "train", pair / "pair.kd", "--target", "numpy")
    assert code == 1 and "internal error" not in err
    assert f"{pair / 'pair.npz'}" in err
    for text in expected:
        assert text in err


def test_a_token_model_given_images_is_told_which_dataset_fits_before_compiling(examples, capsys):
    code, out, err = run(capsys, "train", examples / "text_lstm.kd", "--data", "mnist_small")
    assert code == 1 and "data: mnist_small (--data)" in out
    assert "`x_train` holds uint8 (2000, 28, 28)" in err and "i32[batch, 100]" in err
    assert "hint: keywords_100 fits `TextLSTM`: --data keywords_100" in err
    assert "compiled" not in err


@pytest.mark.parametrize(
    ("setting", "argv", "line"),
    [
        ("", [], "data: mnist_small (the default; --data to change)"),
        ("data = keywords_50", [], "data: keywords_50 (the train block's)"),
        ("data = keywords_50", ["--data", "keywords_100"], "data: keywords_100 (--data)"),
    ],
)
def test_one_line_says_which_data_and_where_the_choice_came_from(tmp_path, capsys, setting, argv, line):
    file = tmp_path / "m.kd"
    file.write_text(f"""model M(ids: i32[batch, 7]) -> y {{ y = embedding(ids, 1000, 2) |> flatten |> dense(10) }}
                        train M {{ {setting} loss = mse }}""")  # fits none of them: stops before compiling
    code, out, err = run(capsys, "train", file, *argv)
    assert code == 1 and out.splitlines() == [line]
    assert f"{line.split()[1]}: `x_train` holds" in err


def dense_model(settings: str) -> str:
    return f"model M(x: f32[batch, 3]) -> y {{ y = dense(x, 2) }} train M {{ {settings} loss = mse }}"


def test_the_data_setting_prints_back_and_parses_again():
    for value, printed in (('"sets/pair.npz"', 'data = "sets/pair.npz"'), ("fashion_small", "data = fashion_small")):
        graph = load(dense_model(f"data = {value}")).model()
        text = to_kd(graph)
        assert printed in text
        assert load(text).model().train == graph.train
    assert "data" not in to_kd(load(dense_model("")).model())


@pytest.mark.parametrize(("value", "message"), [("mnsit", "did you mean `mnist`?"), ('"digits.csv"', ".npz")])
def test_kdsl_check_refuses_data_it_could_not_load(value, message):
    with pytest.raises(KdslArgumentError) as error:
        load(dense_model(f"data = {value}"))
    assert "no dataset" in error.value.message and message in error.value.render()


def test_every_example_checks_and_names_data_that_fits_it(examples, capsys):
    files = sorted(examples.glob("*.kd"))
    assert main(["check", *map(str, files)]) == 0
    for file in files:
        graph = load_file(file).model()
        losses = [graph.train.losses.get(o, graph.train.losses.get(None)).loss for o in graph.output_names]
        assert graph.train.data in datasets.SHIPPED, file.name
        arrays = datasets.for_model(datasets.load(graph.train.data), datasets.Signature.of(graph, losses))
        assert set(arrays["x_train"]) == {value.name for value in graph.inputs}


def test_shipped_datasets_have_their_shapes_and_are_the_same_every_time():
    assert set(datasets.NAMED) == set(DATASETS)
    images = {}
    for name in ("mnist_small", "fashion_small"):
        (x, y), (x_test, y_test) = datasets.NAMED[name].load_data()
        assert x.shape == (2000, 28, 28) and x_test.shape == (500, 28, 28) and x.dtype == np.uint8
        assert set(np.unique(y)) == set(range(10)) and y_test.shape == (500,)
        images[name] = x
    assert not np.array_equal(images["mnist_small"], images["fashion_small"])
    for name, length in (("keywords_50", 50), ("keywords_100", 100)):
        first, again = datasets.load(name).arrays, datasets.load(name).arrays
        assert all(np.array_equal(first[k], again[k]) for k in first)
        tokens, labels = first["x_train"], first["y_train"]
        assert tokens.shape == (2000, length) and tokens.dtype == np.int32 and first["x_test"].shape == (500, length)
        assert tokens.min() >= 1 and tokens.max() < 1000 and set(np.unique(labels)) == set(range(10))
        assert ((tokens == labels[:, None] + 1).sum(axis=1) >= 1).all()  # the keyword is in every sequence
        assert ((tokens >= 1) & (tokens <= 10)).sum(axis=1).max() <= 3  # and no other keyword
    first, again = datasets.load("headlines").arrays, datasets.load("headlines").arrays
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert first["x_train/words"].shape == (2000, 100) and first["x_train/words"].max() < 10_000
    assert first["x_train/extra"].shape == (2000, 5) and first["x_train/extra"].dtype == np.float32
    main_, aux = first["y_train/main"], first["y_train/aux"]
    assert main_.shape == aux.shape == (2000, 1) and 0.4 < aux.mean() < 0.6 and 0.4 < main_.mean() < 0.6
    assert 0.8 < (main_ == aux).mean() < 0.95  # main follows the keyword, but not only


def test_headline_trains_on_its_own_data_out_of_the_box(examples, monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(datasets.NAMED, "headlines", Headlines(train=64, test=32))  # four steps in all
    saved = tmp_path / "headline.kdz"
    argv = ["train", examples / "headline.kd", "--epochs", "2", "--target", "numpy", "--verbose", "2", "--out", saved]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "data: headlines (the train block's)" in out and "Epoch 2/2" in out
    test_line = next(line for line in out.splitlines() if line.startswith("test: "))
    assert "main_accuracy" in test_line and "aux_accuracy" in test_line
    code, out, _ = run(capsys, "evaluate", saved)  # the saved train block names its data
    assert code == 0 and "data: headlines (the train block's)" in out and "main_loss" in out
