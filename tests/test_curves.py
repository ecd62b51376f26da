"""Training curves: `History.plot` and `kdsl train --plot` draw the loss and each metric by epoch, training and
validation on one panel per quantity, through the optional matplotlib."""

from __future__ import annotations

import re
import sys

import numpy as np
import pytest

import kdsl
from kdsl import layers
from kdsl.cli import main
from kdsl.errors import KdslArgumentError, KdslError
from kdsl.runtime.training import History

matplotlib = pytest.importorskip("matplotlib")

MAGIC = {"png": b"\x89PNG\r\n\x1a\n", "svg": b"<?xml", "pdf": b"%PDF"}


def arrays(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((count, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int32)


@pytest.fixture(scope="module")
def model():
    """A tiny classifier, compiled once for the file."""
    model = kdsl.Sequential([kdsl.Input(shape=(3,)), layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"], target="numpy")
    return model


@pytest.fixture(scope="module")
def history(model) -> History:
    x, y = arrays(16, 0)
    return model.fit(x, y, batch_size=4, epochs=2, validation_data=arrays(8, 1), verbose=0)


def test_one_panel_per_quantity_holds_the_training_and_validation_values_by_epoch(history):
    figure = history.plot()
    assert [panel.get_title() for panel in figure.axes] == ["loss", "accuracy"]
    for panel in figure.axes:
        quantity = panel.get_title()
        lines = {line.get_label(): line for line in panel.get_lines()}
        assert sorted(lines) == ["training", "validation"]
        for label, key in (("training", quantity), ("validation", f"val_{quantity}")):
            np.testing.assert_array_equal(lines[label].get_xdata(), [1, 2])
            np.testing.assert_allclose(lines[label].get_ydata(), history.history[key])
        assert panel.get_xlabel() == "epoch"
        assert [t.get_text() for t in panel.get_legend().get_texts()] == ["training", "validation"]


def test_a_notebook_shows_the_figure_as_a_picture(history):
    """IPython shows a value by its `_repr_png_`, whether or not matplotlib's inline display is on."""
    assert history.plot()._repr_png_().startswith(MAGIC["png"])


def test_an_svg_keeps_its_titles_and_legends_as_searchable_text(history, tmp_path):
    fonttype = matplotlib.rcParams["svg.fonttype"]
    figure = history.plot(tmp_path / "c.svg")
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", (tmp_path / "c.svg").read_text())
    for text in ("loss", "accuracy", "training", "validation", "epoch"):
        assert text in texts
    assert len(figure.axes) == 2
    assert matplotlib.rcParams["svg.fonttype"] == fonttype  # set for the file alone


@pytest.mark.parametrize("suffix", sorted(MAGIC))
def test_the_suffix_picks_the_format(history, tmp_path, suffix):
    path = tmp_path / f"curves.{suffix.upper() if suffix == 'png' else suffix}"
    history.plot(path)
    content = path.read_bytes()
    assert content.startswith(MAGIC[suffix]) and len(content) > 1000


def test_validation_every_other_epoch_is_drawn_at_the_epochs_it_ran(model):
    x, y = arrays(16, 0)
    history = model.fit(x, y, batch_size=8, epochs=3, validation_data=arrays(8, 1), validation_freq=2, verbose=0)
    loss = history.plot().axes[0]
    points = {line.get_label(): list(line.get_xdata()) for line in loss.get_lines()}
    assert points == {"training": [1, 2, 3], "validation": [2]}


def test_a_history_made_by_hand_has_one_value_per_epoch():
    figure = History(history={"loss": [3.0, 2.0, 1.0]}, epoch=[0, 1, 2]).plot()
    np.testing.assert_array_equal(figure.axes[0].get_lines()[0].get_xdata(), [1, 2, 3])
    with pytest.raises(KdslArgumentError, match="`val_loss` has 1 values for 3 epochs"):
        History(history={"loss": [3.0, 2.0, 1.0], "val_loss": [2.5]}, epoch=[0, 1, 2]).plot()


def test_an_empty_history_and_an_unknown_suffix_are_refused(history, tmp_path):
    with pytest.raises(KdslError, match="no epochs to plot"):
        History().plot()
    with pytest.raises(KdslArgumentError, match=r"curves\.jpg.*\.png, \.svg, \.pdf"):
        history.plot(tmp_path / "curves.jpg")
    assert not (tmp_path / "curves.jpg").exists()


def test_without_matplotlib_the_error_says_what_to_install(history, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(KdslError, match="needs matplotlib") as error:
        history.plot()
    assert error.value.hint == "pip install 'kdsl[plot]'"


TINY = """
model Tiny(x: f32[batch, 3]) -> y {
    y = dense(x, 2, activation=softmax)
}

train Tiny {
    data             = "tiny.npz"
    loss             = sparse_categorical_crossentropy
    optimizer        = adam
    metrics          = [accuracy]
    batch_size       = 8
    epochs           = 2
    validation_split = 0.25
}
"""


@pytest.fixture
def tiny(tmp_path):
    """A .kd file with a train block and its data beside it."""
    (x_train, y_train), (x_test, y_test) = arrays(32, 0), arrays(8, 1)
    np.savez(tmp_path / "tiny.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (tmp_path / "tiny.kd").write_text(TINY)
    return tmp_path


def test_kdsl_train_plots_the_curves(tiny, capsys):
    argv = ["train", tiny / "tiny.kd", "--target", "numpy", "--verbose", "0", "--out", tiny / "tiny.kdz"]
    assert main([str(a) for a in [*argv, "--plot", tiny / "out.png"]]) == 0
    assert f"training curves in {tiny / 'out.png'}" in capsys.readouterr().out
    assert (tiny / "out.png").read_bytes().startswith(MAGIC["png"])


def test_kdsl_train_refuses_a_plot_it_cannot_write_before_training(tiny, capsys):
    argv = ["train", tiny / "tiny.kd", "--target", "numpy", "--out", tiny / "tiny.kdz", "--plot", tiny / "out.gif"]
    assert main([str(a) for a in argv]) == 1
    assert "out.gif" in capsys.readouterr().err
    assert not (tiny / "tiny.kdz").exists()  # nothing trained
