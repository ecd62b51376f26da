"""Pictures of models: `kdsl.utils.plot_model` and `kdsl plot` draw every layer once with its shapes, as Keras 3's
`plot_model` does, and `kdsl plot --kernels` draws one box per kernel `--explain` lists."""

from __future__ import annotations

import re
import shutil
import sys
from itertools import pairwise
from pathlib import Path

import pytest

import kdsl
from kdsl import layers, ops
from kdsl.cli import main
from kdsl.errors import KdslArgumentError, KdslError
from kdsl.explain import explain, listed_kernels
from kdsl.ir.graph import Graph
from kdsl.lang import load_file
from kdsl.pictures import render
from kdsl.pictures.kernels import kernels_to_dot
from kdsl.pipeline import compile_programs
from kdsl.utils import plot_model

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.kd"))
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot program is not installed")
FORMATS = [".dot", pytest.param(".svg", marks=needs_dot)]


def names_in(text: str, suffix: str) -> list[str]:
    """The bold texts of a picture: each box's name (with show_layer_names) and its shapes."""
    if suffix == ".svg":
        return re.findall(r'font-weight="bold"[^>]*>([^<]*)</text>', text)
    return re.findall(r"<b>([^<]*)</b>", text)


def boxes_in(text: str, suffix: str) -> int:
    return text.count('class="node"') if suffix == ".svg" else len(re.findall(r"^\s*\"[^\"]+\" \[label=", text, re.M))


def expected(graph: Graph) -> tuple[list[str], set[str]]:
    """The names of a model's boxes (its inputs, then each layer once) and every shape they show."""
    names = [v.name for v in graph.inputs] + [layer.name for layer in graph.top_layers()]
    values = [*graph.inputs, *(v for call in graph.calls() for v in [*call.inputs, *call.outputs])]
    return names, {v.type.keras_shape() for v in values}


def shared_model() -> kdsl.Model:
    """Two inputs, two outputs, a layer called on both inputs and operations between layers."""
    left, right = layers.Input(shape=(8,), name="left"), layers.Input(shape=(8,), name="right")
    shared = layers.Dense(4, name="shared")
    joined = ops.tanh(shared(left)) + shared(right)
    return kdsl.Model([left, right], [joined, layers.Dense(2, name="head")(layers.Dense(3, name="middle")(joined))])


@pytest.mark.parametrize("suffix", FORMATS)
@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_an_example_models_picture_shows_each_layer_once_with_its_shapes(example, suffix, tmp_path):
    model = kdsl.load_model_file(example)
    out = tmp_path / f"model{suffix}"
    plot_model(model, out, show_shapes=True, show_layer_names=True)
    text = out.read_text(encoding="utf-8")
    names, shapes = expected(model.graph)
    shown = names_in(text, suffix)
    assert sorted(n for n in shown if n in names) == sorted(names)
    assert shapes <= set(shown)
    assert boxes_in(text, suffix) == len(names)


@pytest.mark.parametrize("suffix", FORMATS)
def test_a_shared_layer_is_one_box_with_an_edge_from_each_input(suffix, tmp_path):
    model = shared_model()
    out = tmp_path / f"model{suffix}"
    plot_model(model, out, show_shapes=True, show_layer_names=True)
    text = out.read_text(encoding="utf-8")
    shown = names_in(text, suffix)
    assert [shown.count(name) for name in ("left", "right", "shared", "tanh", "add", "middle", "head")] == [1] * 7
    assert {"(None, 8)", "(None, 4)", "(None, 3)", "(None, 2)", "[(None, 4), (None, 4)]"} <= set(shown)
    edges = text.count('class="edge"') if suffix == ".svg" else text.count(" -> ")
    assert edges == 7  # left, right -> shared -> tanh -> add <- shared; add -> middle -> head


def test_the_boxes_say_what_keras_says_by_default_and_on_request(tmp_path):
    out = tmp_path / "model.dot"
    plot_model(shared_model(), out)  # Keras's defaults: the class alone
    text = out.read_text()
    assert sorted(names_in(text, ".dot")) == ["Add", "Dense", "Dense", "Dense", "InputLayer", "InputLayer", "Tanh"]
    assert "Output shape" not in text and 'rankdir="TB"' in text and 'dpi="200"' in text
    plot_model(shared_model(), out, show_dtype=True, show_trainable=True, show_layer_activations=True, rankdir="LR")
    text = out.read_text()
    assert text.count("Output dtype: <b>float32</b>") == 7
    assert text.count(">Trainable<") == 3  # the layers with weights; operations have none
    assert text.count("Activation: <b>linear</b>") == 3 and 'rankdir="LR"' in text


def nested_model() -> kdsl.Model:
    inner_input = layers.Input(shape=(4,), name="inner_input")
    encoder = kdsl.Model(inner_input, layers.Dense(3, name="inner_dense")(inner_input), name="encoder")
    tail = kdsl.Sequential([layers.Input(shape=(3,)), layers.Dense(2, name="first"), layers.Dense(2, name="second")],
                           name="tail")  # fmt: skip
    outer_input = layers.Input(shape=(4,), name="outer_input")
    return kdsl.Model(outer_input, layers.Dense(1, name="last")(tail(encoder(outer_input))), name="outer")


def test_a_nested_model_is_one_box_or_expanded_a_cluster_of_its_own(tmp_path):
    out = tmp_path / "model.dot"
    plot_model(nested_model(), out, show_layer_names=True)
    text = out.read_text()
    assert names_in(text, ".dot") == ["outer_input", "encoder", "tail", "last"]
    assert text.count(" -> ") == 3
    plot_model(nested_model(), out, show_layer_names=True, expand_nested=True)
    text = out.read_text()
    assert names_in(text, ".dot") == ["inner_input", "inner_dense", "first", "second", "outer_input", "last"]
    assert 'label="encoder"' in text and 'label="tail"' in text
    key = {name: re.search(rf'"(\w+)" \[label=<.*?<b>{name}</b>', text).group(1) for name in names_in(text, ".dot")}
    edges = set(re.findall(r'"(\w+)" -> "(\w+)"', text))  # into the functional model's input, the Sequential's first
    chain = ["outer_input", "inner_input", "inner_dense", "first", "second", "last"]
    assert edges == {(key[a], key[b]) for a, b in pairwise(chain)}


def test_a_sequential_model_has_no_input_box(tmp_path):
    model = kdsl.Sequential([layers.Input(shape=(3,)), layers.Dense(2, name="first"), layers.Dense(2, name="second")])
    plot_model(model, tmp_path / "model.dot", show_layer_names=True)
    text = (tmp_path / "model.dot").read_text()
    assert names_in(text, ".dot") == ["first", "second"] and text.count(" -> ") == 1


@pytest.fixture(scope="module")
def mnist_lstm():
    """The example's programs, training step too, compiled once (no kernels generated)."""
    return compile_programs(load_file(ROOT / "examples" / "mnist_lstm.kd").model(None), training=True)


def explained_counts(compilation) -> dict[str, int]:
    """The kernels `--explain` lists, by program, counted from its text."""
    sections = re.split(r"\n\n(\w+):\n", explain(compilation))[1:]
    return {name: sum(map(int, re.findall(r": (\d+) kernel\(s\)", body))) for name, body in zip(*[iter(sections)] * 2)}


@pytest.mark.parametrize("suffix", FORMATS)
def test_the_kernels_picture_has_a_box_per_kernel_explain_lists(mnist_lstm, suffix, tmp_path):
    counts = explained_counts(mnist_lstm)
    assert set(counts) == {"forward", "train_step"} and all(counts.values())
    assert {name: len(listed_kernels(mnist_lstm, name)) for name in counts} == counts
    dot = kernels_to_dot(mnist_lstm)
    out = render.write_picture(dot, tmp_path / f"kernels{suffix}")
    text = out.read_text(encoding="utf-8")
    assert boxes_in(text, suffix) == sum(counts.values())
    for name, count in counts.items():
        assert len([key for key, _ in next(c for c in dot.clusters if c.name == f"cluster_{name}").nodes]) == count
    assert text.count("time loop (forwards)") == 2 and text.count("time loop (backwards)") == 1
    assert "from <i>batch_normalization</i>" in text or ">batch_normalization<" in text


def test_the_kernels_edges_follow_the_data_in_program_order(mnist_lstm):
    dot = kernels_to_dot(mnist_lstm)
    forward = next(c for c in dot.clusters if c.name == "cluster_forward")
    order = {key: i for i, (key, _) in enumerate(forward.nodes)}
    assert forward.edges and all(order[a] < order[b] for a, b in forward.edges)
    labels = [str(attrs["label"]) for _, attrs in forward.nodes]
    scan = next(i for i, label in enumerate(labels) if "time loop" in label)
    readers = [order[b] for a, b in forward.edges if order[a] == scan]
    assert readers and all("batch_normalization" in labels[i] for i in readers)  # the LSTM's output feeds the BN


@pytest.mark.parametrize("suffix", FORMATS)
def test_the_command_writes_the_model_and_its_kernels(suffix, tmp_path, capsys):
    example = str(ROOT / "examples" / "mnist_lstm.kd")
    model, kernels = tmp_path / f"model{suffix}", tmp_path / f"kernels{suffix}"
    assert main(["plot", example, "-o", str(model), "--show-shapes", "--show-layer-names"]) == 0
    assert {"lstm", "batch_normalization", "(None, 28, 28)", "(None, 64)"} <= set(names_in(model.read_text(), suffix))
    assert main(["plot", example, "--kernels", "-o", str(kernels)]) == 0
    assert "cluster_forward" in kernels.read_text() and "cluster_train_step" not in kernels.read_text()
    assert f"wrote {kernels}" in capsys.readouterr().out
    assert main(["plot", example, "--kernels", "--training", "-o", str(kernels)]) == 0
    assert "cluster_train_step" in kernels.read_text()


def test_without_graphviz_images_are_refused_with_how_to_install_it(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(render, "find_dot", lambda: None)
    with pytest.raises(KdslError, match="Graphviz") as error:
        plot_model(shared_model(), tmp_path / "model.svg")
    assert "apt-get install graphviz" in error.value.hint and "brew install graphviz" in error.value.hint
    assert "https://graphviz.org/download/" in error.value.hint
    example = str(ROOT / "examples" / "mnist_mlp.kd")
    assert main(["plot", example, "-o", str(tmp_path / "model.png")]) == 1
    assert "apt-get install graphviz" in capsys.readouterr().err and not (tmp_path / "model.png").exists()
    assert main(["plot", example, "-o", str(tmp_path / "model.dot")]) == 0  # needs no Graphviz


@needs_dot
def test_without_the_python_binding_images_are_refused_with_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "graphviz", None)  # as if not installed
    with pytest.raises(KdslError, match="graphviz") as error:
        plot_model(shared_model(), tmp_path / "model.svg")
    assert error.value.hint == "pip install 'kdsl[plot]'" and not (tmp_path / "model.svg").exists()


def test_bad_requests_are_refused_clearly(tmp_path, capsys):
    with pytest.raises(KdslArgumentError, match=r"\.gif"):
        plot_model(shared_model(), tmp_path / "model.gif")
    with pytest.raises(KdslArgumentError, match="list"):
        plot_model([], tmp_path / "model.dot")
    untrained = tmp_path / "untrained.kd"
    untrained.write_text("model Small(x: f32[batch, 4]) -> y {\n    y = dense(x, units=2)\n}\n")
    assert main(["plot", str(untrained), "--kernels", "--training", "-o", str(tmp_path / "k.dot")]) == 1
    assert "no train block" in capsys.readouterr().err
    assert main(["plot", str(untrained), "--kernels", "-o", str(tmp_path / "k.dot")]) == 0
