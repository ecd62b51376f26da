"""The reference workloads: each is a race between kdsl and the same network written in PyTorch, and for
W1 to W4 in Keras too (Keras 3 on TensorFlow, where installed).

W1 sequential-MNIST LSTM(64)+BN+Dense(10), SGD 0.01, batch 64, one epoch of 60,000 (real MNIST).
W2 Fashion-MNIST MLP 784-300-100-10, SGD 0.01, batch 32, one epoch of 55,000 (real Fashion-MNIST).
W3 Embedding(1000,64) -> LSTM(128) -> Dense(10) over 100 steps: inference latency at batch 1, 32, 256.
W4 Embedding -> GRU(256, sequences) -> SimpleRNN(128) -> Dense(10), 50 steps, batch 64, Adam: training.
DeepBench-style recurrent shapes (input size = hidden size, as DeepBench has it): LSTM hidden 256, batch 16,
150 steps; GRU hidden 512, batch 32, 1 step; SimpleRNN hidden 64, batch 1, 96 steps; LSTM hidden 512, batch 1,
100 steps; each as a training step (forward, mean squared error of the last state, backward; no optimizer
update, on both sides) and as inference.

W1 and W2 run whole epochs through `Model.fit` (batching, optimizer updates and metrics included) against a
plain PyTorch loop and Keras's `fit`; the others call the compiled model directly, against PyTorch's modules
and Keras's `predict` (W3) and `train_on_batch` (W4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import kdsl
from kdsl.datasets import fashion_mnist, mnist
from kdsl.explain import program_flops
from kdsl.ir.graph import Graph
from kdsl.lang import load
from kdsl.pipeline import compile_model, compile_programs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

W3 = """model W3(tokens: i32[batch, 100]) -> probs {
    probs = embedding(tokens, 1000, 64) |> lstm(128) |> dense(10, activation=softmax)
}"""

W4 = """model W4(tokens: i32[batch, 50]) -> probs {
    probs = embedding(tokens, 1000, 64) |> gru(256, return_sequences=true) |> simple_rnn(128)
            |> dense(10, activation=softmax)
}
train W4 { loss = sparse_categorical_crossentropy
           optimizer = adam() }"""

DEEPBENCH = """model DeepBench(x: f32[batch, {steps}, {hidden}]) -> h {{
    h = {layer}(x, {hidden})
}}
train DeepBench {{ loss = mean_squared_error }}"""

# name: (layer, PyTorch module, hidden, batch, steps); the last one is DeepBench's inference case of one
# sequence, where a time loop splits its products' columns across the threads
DEEPBENCH_SHAPES = {
    "deepbench-lstm": ("lstm", "LSTM", 256, 16, 150),
    "deepbench-gru": ("gru", "GRU", 512, 32, 1),
    "deepbench-rnn": ("simple_rnn", "RNN", 64, 1, 96),
    "deepbench-lstm-b1": ("lstm", "LSTM", 512, 1, 100),
}


# a batch up to this size reads its recurrent weight at every step faster than it multiplies by it
SMALL_BATCH = 2

# the frameworks kdsl races, each an attribute of `Race`, with the packages its side imports
REFERENCES = {"torch": ("torch",), "keras": ("keras", "tensorflow")}


@dataclass
class Race:
    """One workload: `kdsl()`, `torch()` and `keras()` each run it once (a reference not built is None);
    `flops` is one run's work as kdsl's IR counts it; `streamed` (steps, weight bytes, rows), for a recurrent
    step too small to be GEMM-bound, what bounds it instead (see `benchmarks.limits`)."""

    name: str
    unit: str  # "s", "ms", or "samples/s" (then `samples` per run)
    kdsl: Callable[[], object]
    torch: Callable[[], object] | None
    flops: float
    repeat: int = 3
    samples: int = 0
    keras: Callable[[], object] | None = None
    streamed: tuple[int, int, int] | None = None

    def value(self, seconds: float) -> float:
        if self.unit == "samples/s":
            return self.samples / seconds
        return 1000 * seconds if self.unit == "ms" else seconds


def flops_per_call(graph: Graph, batch: int, training: bool, target: str = "cpu") -> int:
    """The work of one call as `target`'s kernels do it (the CPU folds an embedding into the product that reads
    it, projecting each table row once rather than each token)."""
    compilation = compile_programs(graph, target=target, training=training)
    name = "train_step" if training else "forward"
    return program_flops(compilation.programs[name], compilation.plans[name], {"batch": batch})


def images(dataset, held_out: int = 0, fraction: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    (x, y), _ = dataset.load_data()
    end = held_out + int((len(x) - held_out) * fraction)
    return x[held_out:end].astype(np.float32) / 255, y[held_out:end].astype(np.int64)


def epoch_race(torch, keras, name: str, file: str, dataset, batch_size: int, network, keras_layers, held_out=0,
               fraction=1.0) -> Race:  # fmt: skip
    """One epoch of an example through `Model.fit` against the same network in a plain PyTorch loop with SGD 0.01,
    and in Keras's `fit` with the same optimizer, loss and metric.

    `network(torch)` builds the PyTorch model: a function from a batch of images to logits, and its parameters.
    `keras_layers(keras)` lists the Keras layers after the input.
    """
    x, y = images(dataset, held_out, fraction)
    model = kdsl.load_model_file(EXAMPLES / file)
    model.compile(optimizer=kdsl.optimizers.SGD(0.01))  # the others' optimizer, whatever the file's train block says
    flops = flops_per_call(model.graph, batch_size, training=True) * len(x) / batch_size
    ours = lambda: model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # noqa: E731
    theirs = None
    if torch:
        logits, params = network(torch)
        sgd = torch.optim.SGD(params, lr=0.01)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def theirs():
            order = torch.randperm(len(tx))
            for start in range(0, len(tx), batch_size):
                rows = order[start : start + batch_size]
                sgd.zero_grad()
                torch.nn.functional.cross_entropy(logits(tx[rows]), ty[rows]).backward()
                sgd.step()

    keras_fit = None
    if keras:
        net = keras.Sequential([keras.Input(x.shape[1:]), *keras_layers(keras)])
        net.compile(keras.optimizers.SGD(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
        keras_fit = lambda: net.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)  # noqa: E731

    return Race(name, "s", ours, theirs, flops, keras=keras_fit)


def lstm_network(torch, device: str = "cpu"):
    nn = torch.nn
    lstm, norm, head = (m.to(device) for m in (nn.LSTM(28, 64, batch_first=True), nn.BatchNorm1d(64, 1e-3, 0.01),
                                               nn.Linear(64, 10)))  # fmt: skip

    def logits(x):
        _, (h, _) = lstm(x)
        return head(norm(h[-1]))

    return logits, [*lstm.parameters(), *norm.parameters(), *head.parameters()]


def lstm_layers(keras):
    return [keras.layers.LSTM(64), keras.layers.BatchNormalization(), keras.layers.Dense(10, activation="softmax")]


def mlp_network(torch):
    nn = torch.nn
    layers = [nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)]
    net = nn.Sequential(*layers)
    return net, list(net.parameters())


def mlp_layers(keras):
    dense = keras.layers.Dense
    return [keras.layers.Flatten(), dense(300, activation="relu"), dense(100, activation="relu"),
            dense(10, activation="softmax")]  # fmt: skip


def w1(torch, keras, fraction: float, epoch: str) -> Race:
    return epoch_race(torch, keras, f"W1 LSTM sequential MNIST, {epoch} (s)", "mnist_lstm.kd", mnist, 64,
                      lstm_network, lstm_layers, fraction=fraction)  # fmt: skip


def w2(torch, keras, fraction: float, epoch: str) -> Race:
    return epoch_race(torch, keras, f"W2 MLP Fashion-MNIST, {epoch} (s)", "fashion_mlp.kd", fashion_mnist, 32,
                      mlp_network, mlp_layers, held_out=5000, fraction=fraction)  # fmt: skip


def w3(torch, keras, batch: int, repeat: int) -> Race:
    graph = load(W3, "w3.kd").models["W3"]
    model = compile_model(graph, target="cpu", training=False)
    tokens = np.random.default_rng(0).integers(0, 1000, (batch, 100)).astype(np.int32)
    theirs = None
    if torch:
        nn = torch.nn
        embed, lstm, head = nn.Embedding(1000, 64), nn.LSTM(64, 128, batch_first=True), nn.Linear(128, 10)
        t = torch.from_numpy(tokens.astype(np.int64))

        def theirs():
            with torch.no_grad():
                _, (h, _) = lstm(embed(t))
                torch.softmax(head(h[-1]), -1)

    keras_predict = None
    if keras:
        layers = keras.layers
        net = keras.Sequential([keras.Input((100,), dtype="int32"), layers.Embedding(1000, 64), layers.LSTM(128),
                                layers.Dense(10, activation="softmax")])  # fmt: skip
        # `predict`, the call Keras users serve with; `predict_on_batch` skips its set-up (see RESULTS.md)
        keras_predict = lambda: net.predict(tokens, batch_size=batch, verbose=0)  # noqa: E731

    name = f"W3 Embedding-LSTM(128)-Dense inference, batch {batch} (ms)"
    flops = flops_per_call(graph, batch, False)
    streamed = (100, 4 * 128 * 4 * 128, batch) if batch <= SMALL_BATCH else None
    return Race(name, "ms", lambda: model.forward(tokens), theirs, flops, repeat, keras=keras_predict,
                streamed=streamed)  # fmt: skip


def w4(torch, keras, steps: int = 10) -> Race:
    graph = load(W4, "w4.kd").models["W4"]
    model = kdsl.Model.from_graph(graph)
    model.compile()
    rng = np.random.default_rng(0)
    tokens, labels = rng.integers(0, 1000, (64, 50)).astype(np.int32), rng.integers(0, 10, 64)

    def ours():
        for _ in range(steps):
            model.train_on_batch(tokens, labels)

    theirs = None
    if torch:
        nn = torch.nn
        embed, gru, rnn = nn.Embedding(1000, 64), nn.GRU(64, 256, batch_first=True), nn.RNN(256, 128, batch_first=True)
        head = nn.Linear(128, 10)
        params = [*embed.parameters(), *gru.parameters(), *rnn.parameters(), *head.parameters()]
        adam = torch.optim.Adam(params, lr=1e-3)
        t, y = torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(labels.astype(np.int64))

        def theirs():
            for _ in range(steps):
                adam.zero_grad()
                sequence, _ = gru(embed(t))
                _, h = rnn(sequence)
                torch.nn.functional.cross_entropy(head(h[-1]), y).backward()
                adam.step()

    keras_steps = None
    if keras:
        layers = keras.layers
        net = keras.Sequential([keras.Input((50,), dtype="int32"), layers.Embedding(1000, 64),
                                layers.GRU(256, return_sequences=True), layers.SimpleRNN(128),
                                layers.Dense(10, activation="softmax")])  # fmt: skip
        net.compile(keras.optimizers.Adam(), "sparse_categorical_crossentropy")

        def keras_steps():
            for _ in range(steps):
                net.train_on_batch(tokens, labels)

    name = "W4 Embedding-GRU(256)-SimpleRNN(128)-Dense, Adam, batch 64 (samples/s)"
    flops = steps * flops_per_call(graph, 64, training=True)
    # nine turns a side: this VM's slow spells last seconds, as long as a few turns of W4
    return Race(name, "samples/s", ours, theirs, flops, repeat=9, samples=64 * steps, keras=keras_steps)


def deepbench(torch, layer: str, module: str, hidden: int, batch: int, steps: int, repeat: int) -> list[Race]:
    """A training step and an inference call of one recurrent layer at a DeepBench shape."""
    graph = load(DEEPBENCH.format(layer=layer, hidden=hidden, steps=steps), "deepbench.kd").models["DeepBench"]
    model = compile_model(graph, target="cpu")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, steps, hidden)).astype(np.float32)
    y = rng.standard_normal((batch, hidden)).astype(np.float32)
    train_theirs = infer_theirs = None
    if torch:
        net = getattr(torch.nn, module)(hidden, hidden, batch_first=True)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)

        def last_state(sequence):
            state = net(sequence)[1]
            return (state[0] if isinstance(state, tuple) else state)[-1]

        def train_theirs():
            net.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(last_state(tx), ty).backward()

        def infer_theirs():
            with torch.no_grad():
                last_state(tx)

    shape = f"{module} hidden {hidden}, batch {batch}, {steps} step{'s' * (steps > 1)}"
    gates = {"LSTM": 4, "GRU": 3, "RNN": 1}[module]
    weight = 4 * hidden * gates * hidden  # the recurrent kernel's bytes, read at every step forwards and backwards
    streamed = (lambda passes: (passes * steps, weight, batch)) if batch <= SMALL_BATCH else (lambda passes: None)
    return [
        Race(f"DeepBench {shape}: training step (ms)", "ms", lambda: model.train_step([x], [y]), train_theirs,
             flops_per_call(graph, batch, True), repeat, streamed=streamed(2)),
        Race(f"DeepBench {shape}: inference (ms)", "ms", lambda: model.forward(x), infer_theirs,
             flops_per_call(graph, batch, False), repeat, streamed=streamed(1)),
    ]  # fmt: skip


WORKLOADS = ("w1", "w2", "w3", "w4", *DEEPBENCH_SHAPES)


def races(torch, keras, quick: bool, only: tuple[str, ...] = WORKLOADS) -> list[Race]:
    """The workloads named in `only` (all by default), with the side of each reference module given (else None);
    `quick` takes a quarter of W1's and W2's epoch and fewer repetitions."""
    fraction, epoch = (0.25, "a quarter epoch") if quick else (1.0, "one epoch")
    repeat = 5 if quick else 21
    builders: dict[str, Callable[[], list[Race]]] = {
        "w1": lambda: [w1(torch, keras, fraction, epoch)],
        "w2": lambda: [w2(torch, keras, fraction, epoch)],
        "w3": lambda: [w3(torch, keras, batch, repeat) for batch in (1, 32, 256)],
        "w4": lambda: [w4(torch, keras)],
    }
    for name, shape in DEEPBENCH_SHAPES.items():
        builders[name] = lambda shape=shape: deepbench(torch, *shape, repeat)
    result = [race for name in WORKLOADS if name in only for race in builders[name]()]
    if quick:
        for race in result:
            race.repeat = min(race.repeat, 5) if race.unit == "ms" else 1
    return result
