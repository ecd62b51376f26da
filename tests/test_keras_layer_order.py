"""A functional model's layers, and so its weights, come in Keras's order: `set_weights(keras_model.get_weights())`
puts each array where Keras had it. The order Keras 3 gives each graph is stored in tests/data, with the script
that recorded it; the graphs are that script's own, built here with kdsl."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import kdsl

DATA = Path(__file__).parent / "data"
spec = importlib.util.spec_from_file_location("keras_layer_orders", DATA / "keras_layer_orders.py")
recorded = importlib.util.module_from_spec(spec)
spec.loader.exec_module(recorded)
KERAS = json.loads((DATA / "keras_layer_orders.json").read_text())["orders"]


@pytest.mark.parametrize("name", sorted(KERAS))
def test_layers_and_weights_come_in_keras_order(name):
    inputs, outputs = recorded.graphs(kdsl)[name]
    graph = kdsl.Model(inputs, outputs).graph
    ours = [[layer.name, [list(p.shape) for p in layer.params]] for layer in graph.layers() if layer.params]
    assert ours == KERAS[name]


def test_weights_follow_the_layer_order():
    inputs, outputs = recorded.graphs(kdsl)["two_heads"]
    model = kdsl.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse", target="numpy")
    assert [w.shape for w in model.get_weights()] == [(4, 3), (3,), (4, 2), (2,), (3, 1), (1,)]


def test_a_wrapped_layer_uses_up_its_name_as_in_keras():
    """Keras names the layer a wrapper holds when it is made: after Bidirectional(LSTM) twice and
    TimeDistributed(Dense), the next Dense is `dense_1` (names Keras 3.15 gives this model), in Python and `.kd`."""
    from kdsl.lang import load

    x = kdsl.Input(shape=(5, 3))
    h = kdsl.layers.Bidirectional(kdsl.layers.LSTM(4, return_sequences=True))(x)
    h = kdsl.layers.Bidirectional(kdsl.layers.LSTM(4, return_sequences=True))(h)
    h = kdsl.layers.TimeDistributed(kdsl.layers.Dense(3))(h)
    model = kdsl.Model(x, kdsl.layers.Dense(2)(h))
    keras_names = ["bidirectional", "bidirectional_1", "time_distributed", "dense_1"]
    assert [layer.name for layer in model.graph.layers()] == keras_names
    text = """model M(x: f32[batch, 5, 3]) -> y {
        layer td = time_distributed(dense(3))
        h = bidirectional(x, lstm(4, return_sequences=true)) |> bidirectional(lstm(4, return_sequences=true))
        y = td(h) |> dense(2)
    }"""
    assert [layer.name for layer in load(text, "m.kd").models["M"].layers()] == [
        "bidirectional", "bidirectional_1", "td", "dense_1"
    ]  # fmt: skip
