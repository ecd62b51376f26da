"""Write the Keras fixtures of tests/test_keras_files.py with real Keras 3 (TensorFlow backend).

Each model gets random weights, is saved as `<name>.keras` (a few as legacy `<name>.h5` too), and `<name>.npz`
holds the inputs it was given (`input/<i>`) and Keras's predictions on them (`output/<i>`). Keras stores the
archive's members uncompressed; they are stored again deflated, unchanged, to keep the files small. The tests never run
this script: it needs TensorFlow and Keras, which kdsl does not depend on.

    python tests/data/keras/make_fixtures.py
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from keras import layers

HERE = Path(__file__).parent
RNG = np.random.default_rng(28)


def randomize(model: keras.Model) -> None:
    """Weights far from their initial values (biases and moving statistics included), so that every one counts."""
    weights = []
    for variable in model.weights:
        shape = tuple(variable.shape)
        if "moving_variance" in variable.path:
            weights.append(RNG.uniform(0.5, 1.5, shape))
        else:
            weights.append(RNG.normal(0.0, 0.4, shape))
    model.set_weights([w.astype("float32") for w in weights])


def ids(batch: int, steps: int, vocabulary: int, pad: bool = False) -> np.ndarray:
    x = RNG.integers(1, vocabulary, (batch, steps)).astype("int32")
    if pad:
        for row, length in enumerate(RNG.integers(1, steps + 1, batch)):
            x[row, length:] = 0
    return x


def floats(*shape: int) -> np.ndarray:
    return RNG.normal(0.0, 1.0, shape).astype("float32")


def save(model: keras.Model, name: str) -> None:
    """`model.save(<name>.keras)`, its members then deflated."""
    path = HERE / f"{name}.keras"
    model.save(path)
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for member, data in members:
            archive.writestr(member, data)


def write(name: str, model: keras.Model, inputs: list[np.ndarray], other_files: bool = False) -> None:
    """The model with random weights as `<name>.keras` (with `other_files`, as a legacy `<name>.h5` and its weights
    alone as `<name>.weights.h5` too), its inputs and Keras's predictions as `<name>.npz`."""
    randomize(model)
    save(model, name)
    if other_files:
        model.save(HERE / f"{name}.h5")
        model.save_weights(HERE / f"{name}.weights.h5")
    outputs = model.predict(inputs if len(inputs) > 1 else inputs[0], verbose=0)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    arrays = {f"input/{i}": x for i, x in enumerate(inputs)} | {f"output/{i}": y for i, y in enumerate(outputs)}
    np.savez_compressed(HERE / f"{name}.npz", **arrays)


def embedding_lstm() -> None:
    """The RNN guide's first model: Embedding → LSTM → Dense."""
    model = keras.Sequential(
        [keras.Input((6,), dtype="int32"), layers.Embedding(50, 8), layers.LSTM(6), layers.Dense(3, "softmax")]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    write("embedding_lstm", model, [ids(4, 6, 50)], other_files=True)


def gru_simple_rnn() -> None:
    """Embedding → GRU(return_sequences) → SimpleRNN → Dense."""
    model = keras.Sequential(
        [
            keras.Input((7,), dtype="int32"),
            layers.Embedding(40, 6),
            layers.GRU(5, return_sequences=True),
            layers.SimpleRNN(4),
            layers.Dense(2),
        ]
    )
    model.compile(optimizer="rmsprop", loss="mse")
    write("gru_simple_rnn", model, [ids(3, 7, 40)])


def bidirectional_stack() -> None:
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            layers.Bidirectional(layers.LSTM(4, return_sequences=True)),
            layers.Bidirectional(layers.GRU(3), merge_mode="sum"),
            layers.Dense(2),
        ]
    )
    write("bidirectional_stack", model, [floats(3, 5, 3)])


def mnist_lstm() -> None:
    """Sequential MNIST, shrunk: each row of a 7×7 image is one timestep."""
    inputs = keras.Input((7, 7))
    h = layers.LSTM(8)(inputs)
    h = layers.BatchNormalization()(h)
    outputs = layers.Dense(10, activation="softmax")(h)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["sparse_categorical_accuracy"],
    )
    write("mnist_lstm", model, [floats(4, 7, 7)])


def two_inputs_two_outputs() -> None:
    """The functional guide's ticket model, small: title and body text and tags → priority and department."""
    title = keras.Input((None,), dtype="int32", name="title")
    body = keras.Input((None,), dtype="int32", name="body")
    tags = keras.Input((4,), name="tags")
    title_features = layers.LSTM(6)(layers.Embedding(30, 5)(title))
    body_features = layers.LSTM(3)(layers.Embedding(30, 5)(body))
    x = layers.concatenate([title_features, body_features, tags])
    priority = layers.Dense(1, name="priority")(x)
    department = layers.Dense(3, name="department")(x)
    model = keras.Model([title, body, tags], [priority, department])
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss={
            "priority": keras.losses.BinaryCrossentropy(from_logits=True),
            "department": keras.losses.CategoricalCrossentropy(from_logits=True),
        },
        loss_weights={"priority": 1.0, "department": 0.2},
    )
    write("two_inputs_two_outputs", model, [ids(3, 5, 30), ids(3, 8, 30), floats(3, 4)], other_files=True)


def masked() -> None:
    model = keras.Sequential(
        [
            keras.Input((6,), dtype="int32"),
            layers.Embedding(20, 4, mask_zero=True),
            layers.LSTM(5, return_sequences=True),
            layers.GRU(3),
            layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["binary_accuracy"])
    write("masked", model, [ids(5, 6, 20, pad=True)])


def encoder_decoder() -> None:
    """The RNN guide's sequence-to-sequence model: the encoder's states start the decoder."""
    encoder_inputs = keras.Input((None, 5), name="encoder_inputs")
    _, h, c = layers.LSTM(6, return_state=True)(encoder_inputs)
    decoder_inputs = keras.Input((None, 4), name="decoder_inputs")
    decoded = layers.LSTM(6, return_sequences=True)(decoder_inputs, initial_state=[h, c])
    outputs = layers.Dense(4, activation="softmax")(decoded)
    model = keras.Model([encoder_inputs, decoder_inputs], outputs)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    write("encoder_decoder", model, [floats(2, 5, 5), floats(2, 3, 4)])


def time_distributed() -> None:
    model = keras.Sequential(
        [
            keras.Input((5, 3)),
            layers.TimeDistributed(layers.Dense(4, activation="relu")),
            layers.SimpleRNN(3, return_sequences=True),
            layers.TimeDistributed(layers.Dense(2)),
        ]
    )
    write("time_distributed", model, [floats(3, 5, 3)])


def gru_reset_before() -> None:
    model = keras.Sequential([keras.Input((6, 3)), layers.GRU(4, reset_after=False), layers.Dense(2)])
    model.compile(optimizer="adagrad", loss="mae", metrics=["mae"])
    write("gru_reset_before", model, [floats(3, 6, 3)])


def shared_layers() -> None:
    """One LSTM reads both inputs (shared weights); the two codes are added and multiplied."""
    left = keras.Input((4, 3), name="left")
    right = keras.Input((4, 3), name="right")
    encoder = layers.LSTM(5, name="encoder")
    a, b = encoder(left), encoder(right)
    merged = layers.concatenate([layers.add([a, b]), layers.multiply([a, b])])
    outputs = layers.Dense(1)(merged)
    write("shared_layers", keras.Model([left, right], outputs), [floats(3, 4, 3), floats(3, 4, 3)])


def settings() -> None:
    """Initializers, regularizers, Dropout, Activation, Flatten, Reshape and RepeatVector with their settings."""
    model = keras.Sequential(
        [
            keras.Input((4, 3)),
            layers.Flatten(),
            layers.Dense(
                6,
                kernel_initializer=keras.initializers.RandomNormal(stddev=0.02),
                kernel_regularizer=keras.regularizers.L2(0.01),
                bias_regularizer=keras.regularizers.L1L2(l1=0.001, l2=0.002),
            ),
            layers.Activation("tanh"),
            layers.Dropout(0.25),
            layers.RepeatVector(2),
            layers.LSTM(3, recurrent_activation="hard_sigmoid", unit_forget_bias=False, use_bias=False),
            layers.Reshape((3, 1)),
            layers.SimpleRNN(2, activation="relu"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01, beta_1=0.8, amsgrad=True), loss="mse",
                  metrics=["mae", "mse"])  # fmt: skip
    write("settings", model, [floats(3, 4, 3)])


def stacked_cells() -> None:
    model = keras.Sequential(
        [keras.Input((5, 2)), layers.RNN([layers.LSTMCell(4), layers.GRUCell(3)]), layers.Dense(1)]
    )
    write("stacked_cells", model, [floats(2, 5, 2)])


def nested() -> None:
    """Models called as layers: a Sequential encoder and a functional head."""
    encoder = keras.Sequential([keras.Input((5, 3)), layers.LSTM(4, return_sequences=True), layers.GRU(3)],
                               name="encoder")  # fmt: skip
    code = keras.Input((3,))
    head = keras.Model(code, layers.Dense(2, activation="tanh")(code), name="head")
    frames = keras.Input((5, 3), name="frames")
    model = keras.Model(frames, layers.Dense(1)(head(encoder(frames))))
    model.compile(optimizer="adam", loss="mse")
    write("nested", model, [floats(3, 5, 3)])


def partial() -> None:
    """A model kdsl converts only in part: its Conv1D is refused, so `--partial` ends the model before it. The
    `.npz` holds the outputs of that part: the `aux` output, then the GRU sequence the Conv1D reads."""
    x = keras.Input((6, 2))
    sequence = layers.GRU(4, return_sequences=True)(x)
    aux = layers.Dense(2, name="aux")(layers.GRU(3)(sequence))
    main = layers.Dense(1, name="main")(layers.Flatten()(layers.Conv1D(2, 3)(sequence)))
    model = keras.Model(x, [main, aux])
    randomize(model)
    save(model, "partial")
    inputs = floats(2, 6, 2)
    part = keras.Model(x, [aux, sequence]).predict(inputs, verbose=0)
    np.savez_compressed(HERE / "partial.npz", **{"input/0": inputs, "output/0": part[0], "output/1": part[1]})


def stacked_states() -> None:
    """An RNN over two cells started from given states, each cell's as one list."""
    x = keras.Input((5, 2), name="x")
    h, c, g = keras.Input((4,), name="h"), keras.Input((4,), name="c"), keras.Input((3,), name="g")
    y = layers.RNN([layers.LSTMCell(4), layers.GRUCell(3)])(x, initial_state=[[h, c], [g]])
    model = keras.Model([x, h, c, g], layers.Dense(2)(y))
    write("stacked_states", model, [floats(2, 5, 2), floats(2, 4), floats(2, 4), floats(2, 3)])


def refused() -> None:
    """Models kdsl refuses: a Conv1D, a Lambda, a constraint."""
    conv = keras.Sequential([keras.Input((6, 2)), layers.Conv1D(2, 3), layers.Flatten(), layers.Dense(1)])
    save(conv, "refused_conv")
    inputs = keras.Input((3,))
    lam = keras.Model(inputs, layers.Dense(1)(layers.Lambda(lambda x: x * 2.0)(inputs)))
    save(lam, "refused_lambda")
    constrained = keras.Sequential([keras.Input((3,)), layers.Dense(2, kernel_constraint=keras.constraints.MaxNorm(2))])
    save(constrained, "refused_constraint")


if __name__ == "__main__":
    for make in (embedding_lstm, gru_simple_rnn, bidirectional_stack, mnist_lstm, two_inputs_two_outputs, masked,
                 encoder_decoder, time_distributed, gru_reset_before, shared_layers, settings, stacked_cells,
                 nested, stacked_states, partial, refused):  # fmt: skip
        make()
    print(f"keras {keras.__version__}: fixtures written to {HERE}")
