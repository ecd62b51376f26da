"""kdsl against PyTorch on the reference workloads, side by side in one run: `python -m benchmarks [--quick]`.

W1 sequential-MNIST LSTM(64)+BN+Dense(10), SGD 0.01, batch 64, one epoch of 60,000 (real MNIST).
W2 Fashion-MNIST MLP 784-300-100-10, SGD 0.01, batch 32, one epoch of 55,000 (real Fashion-MNIST).
W3 Embedding(1000,64) -> LSTM(128) -> Dense(10) over 100 steps: inference latency at batch 1, 32, 256.
W4 Embedding -> GRU(256, sequences) -> SimpleRNN(128) -> Dense(10), 50 steps, batch 64, Adam: training.

Each measurement alternates kdsl and PyTorch after a warm-up and reports medians, the ratio
kdsl / PyTorch, and the machine's float32 GEMM rate (a 1024³ NumPy matmul) for scale. The
datasets come from $KDSL_DATA (see kdsl.datasets).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

import kdsl
from kdsl.backends.compiled import compile_model
from kdsl.datasets import fashion_mnist, mnist
from kdsl.lang import load

W3 = """model W3(tokens: i32[batch, 100]) -> probs {
    probs = embedding(tokens, 1000, 64) |> lstm(128) |> dense(10, activation=softmax)
}"""

W4 = """model W4(tokens: i32[batch, 50]) -> probs {
    probs = embedding(tokens, 1000, 64) |> gru(256, return_sequences=true) |> simple_rnn(128)
            |> dense(10, activation=softmax)
}
train W4 { loss = sparse_categorical_crossentropy
           optimizer = adam() }"""


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def alternate(kdsl_fn, torch_fn, repeat: int) -> tuple[float, float | None]:
    """Medians of `repeat` runs of each, interleaved, after one warm-up run of each."""
    kdsl_fn()
    if torch_fn:
        torch_fn()
    ours, theirs = [], []
    for _ in range(repeat):
        ours.append(timed(kdsl_fn))
        if torch_fn:
            theirs.append(timed(torch_fn))
    return statistics.median(ours), statistics.median(theirs) if theirs else None


def gemm_rate() -> float:
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    seconds = min(timed(lambda: a @ a) for _ in range(5))
    return 2 * 1024**3 / seconds / 1e9


def images(dataset, held_out: int = 0, fraction: float = 1.0):
    (x, y), _ = dataset.load_data()
    end = held_out + int((len(x) - held_out) * fraction)
    return x[held_out:end].astype(np.float32) / 255, y[held_out:end].astype(np.int64)


def epoch_race(torch, file: str, dataset, batch_size: int, network, repeat: int, held_out: int = 0,
               fraction: float = 1.0):  # fmt: skip
    """One epoch of an example through `Model.fit` against the same network in a plain PyTorch loop with SGD 0.01.

    `network(torch)` builds the PyTorch model: a function from a batch of images to logits, and its parameters.
    """
    x, y = images(dataset, held_out, fraction)
    model = kdsl.load_model_file(os.path.join(os.path.dirname(__file__), "..", "examples", file))
    model.compile()
    ours = lambda: model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, initial_epoch=0)  # noqa: E731
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

    return alternate(ours, theirs, repeat)


def lstm_network(torch):
    nn = torch.nn
    lstm, norm, head = nn.LSTM(28, 64, batch_first=True), nn.BatchNorm1d(64, 1e-3, 0.01), nn.Linear(64, 10)

    def logits(x):
        _, (h, _) = lstm(x)
        return head(norm(h[-1]))

    return logits, [*lstm.parameters(), *norm.parameters(), *head.parameters()]


def mlp_network(torch):
    nn = torch.nn
    layers = [nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10)]
    net = nn.Sequential(*layers)
    return net, list(net.parameters())


def w1(torch, repeat, fraction=1.0):
    return epoch_race(torch, "mnist_lstm.kd", mnist, 64, lstm_network, repeat, fraction=fraction)


def w2(torch, repeat, fraction=1.0):
    return epoch_race(torch, "fashion_mlp.kd", fashion_mnist, 32, mlp_network, repeat, held_out=5000, fraction=fraction)


def w3(torch, repeat, batch):
    graph = load(W3, "w3.kd").models["W3"]
    model = compile_model(graph, target="cpu", training=False)
    tokens = np.random.default_rng(0).integers(0, 1000, (batch, 100)).astype(np.int32)
    ours = lambda: model.forward(tokens)  # noqa: E731
    theirs = None
    if torch:
        nn = torch.nn
        embed, lstm, head = nn.Embedding(1000, 64), nn.LSTM(64, 128, batch_first=True), nn.Linear(128, 10)
        t = torch.from_numpy(tokens.astype(np.int64))

        def theirs():
            with torch.no_grad():
                _, (h, _) = lstm(embed(t))
                torch.softmax(head(h[-1]), -1)

    return alternate(ours, theirs, repeat)


def w4(torch, repeat, steps=10):
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

    ours_s, theirs_s = alternate(ours, theirs, repeat)
    rate = lambda s: 64 * steps / s if s else None  # noqa: E731
    return rate(ours_s), rate(theirs_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one repetition, a quarter of W1's and W2's epoch")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    repeat = 1 if args.quick else 3
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
        print("PyTorch is not installed: kdsl alone")

    import numba

    numba.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}, numba {numba.__version__}"
          + (f", PyTorch {torch.__version__}" if torch else "") + f"; {args.threads} threads")  # fmt: skip
    print(f"float32 GEMM (1024³, NumPy): {gemm_rate():.0f} GFLOP/s")
    fraction, epoch = (0.25, "a quarter epoch") if args.quick else (1.0, "one epoch")
    rows = [(f"W1 {epoch} (s)", *w1(torch, repeat, fraction)), (f"W2 {epoch} (s)", *w2(torch, repeat, fraction))]
    for batch in (1, 32, 256):
        ours, theirs = w3(torch, 10 * repeat + 1, batch)
        rows.append((f"W3 batch {batch} (ms)", 1000 * ours, 1000 * theirs if theirs else None))
    ours, theirs = w4(torch, repeat)
    rows.append(("W4 training (samples/s, higher is better)", ours, theirs))
    print("\n| workload | kdsl | PyTorch | kdsl / PyTorch time |\n|---|---|---|---|")
    for name, ours, theirs in rows:
        if theirs is None:
            print(f"| {name} | {ours:.3g} | — | — |")
            continue
        ratio = theirs / ours if "samples/s" in name else ours / theirs
        print(f"| {name} | {ours:.3g} | {theirs:.3g} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
