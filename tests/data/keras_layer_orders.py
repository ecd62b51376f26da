"""Functional graphs whose layer order (and so weight order) kdsl must share with Keras, and the script that
records Keras's order: `KERAS_BACKEND=torch python tests/data/keras_layer_orders.py` (with Keras 3 installed)
writes keras_layer_orders.json beside it. The graphs are written once, against the API both share, so
`tests/test_keras_layer_order.py` builds the same ones with kdsl."""

from __future__ import annotations

import json
from pathlib import Path


def graphs(keras) -> dict:
    """name -> (inputs, outputs), built with `keras` (Keras itself, or kdsl, which takes the same calls)."""
    L = keras.layers
    built = {}

    x = keras.Input(shape=(4,))
    a, b = L.Dense(2, name="a")(x), L.Dense(1, name="b")(L.Dense(3, name="c")(x))
    built["two_heads"] = ([x], [a, b])
    built["two_heads_swapped"] = ([x], [b, a])

    x1, x2 = keras.Input(shape=(4,)), keras.Input(shape=(6,))
    merged = L.Concatenate(name="merge")([L.Dense(3, name="d1")(x1), L.Dense(5, name="d2")(x2)])
    built["two_inputs"] = ([x1, x2], [L.Dense(2, name="out")(merged)])

    x1, x2 = keras.Input(shape=(4,)), keras.Input(shape=(4,))
    shared = L.Dense(3, name="shared")
    built["shared_layer"] = ([x1, x2], [L.Add(name="sum")([shared(x1), shared(x2)])])

    x = keras.Input(shape=(4,))
    shared = L.Dense(4, name="shared")
    built["shared_at_two_depths"] = ([x], [shared(L.Dense(4, name="pre")(shared(x)))])

    x = keras.Input(shape=(4,))
    deep = L.Dense(2, name="deep3")(L.Dense(3, name="deep2")(L.Dense(3, name="deep1")(x)))
    built["deep_branch_first"] = ([x], [deep, L.Dense(2, name="shallow")(x)])

    x = keras.Input(shape=(4,))
    h = L.Dense(4, name="h")(x)
    residual = L.Add(name="residual")([h, L.Dense(4, name="r2")(L.Dense(4, name="r1")(h))])
    built["residual"] = ([x], [L.Dense(1, name="head")(residual)])

    words, extra = keras.Input(shape=(7,), dtype="int32"), keras.Input(shape=(5,))
    code = L.LSTM(6, name="encoder")(L.Embedding(20, 8, name="embed")(words))
    aux = L.Dense(1, activation="sigmoid", name="aux")(code)
    z = L.Dense(4, activation="relu", name="hidden")(L.Concatenate(name="joined")([code, extra]))
    built["headline"] = ([words, extra], [L.Dense(1, activation="sigmoid", name="main")(z), aux])

    seq = keras.Input(shape=(5, 3))
    both = L.Bidirectional(L.LSTM(4, return_sequences=True), name="bi")(seq)
    steps = L.TimeDistributed(L.Dense(2), name="per_step")(both)
    built["wrappers"] = ([seq], [L.GRU(3, name="gru")(steps)])

    x1, x2 = keras.Input(shape=(4,)), keras.Input(shape=(3,))
    early = L.Dense(3, name="early2")(L.Dense(3, name="early1")(x1))
    built["late_input"] = ([x1, x2], [L.Multiply(name="gate")([early, L.Dense(3, name="late")(x2)])])

    x = keras.Input(shape=(4,))
    left = L.Dense(3, name="left")(x)
    right = L.Dense(3, name="right2")(L.Dense(3, name="right1")(x))
    both = L.Concatenate(name="cat")([left, right])
    built["diamond_two_outputs"] = ([x], [L.Dense(2, name="o1")(both), L.Dense(1, name="o2")(left)])
    return built


def layer_order(model) -> list[tuple[str, list[list[int]]]]:
    """Each layer with weights, in the model's order, with its weights' shapes in order."""
    return [(layer.name, [list(w.shape) for w in layer.weights]) for layer in model.layers if layer.weights]


if __name__ == "__main__":
    import keras

    orders = {name: layer_order(keras.Model(inputs, outputs)) for name, (inputs, outputs) in graphs(keras).items()}
    lines = [f"  {json.dumps(name)}: {json.dumps(order)}" for name, order in orders.items()]
    text = f'{{"keras": {json.dumps(keras.__version__)}, "orders": {{\n' + ",\n".join(lines) + "\n}}\n"
    (Path(__file__).parent / "keras_layer_orders.json").write_text(text)
