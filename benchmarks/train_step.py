"""One training step (forward, loss, backward; no optimizer update) and one inference call of a model,
kdsl's NumPy and CPU backends against PyTorch on the CPU, side by side in one run.

    python benchmarks/train_step.py [examples/mnist_lstm.kd] [--batch 64] [--threads 2] [--repeat 30]

"kdsl cpu, 1 thread" is the backend compiled with `parallel=False` (BLAS and kernels on one
thread); "kdsl cpu" splits time loops and GEMMs across the threads. Also measures the CPU
backend's cold compile (empty kernel cache, in a fresh process) and its cached start-up (a
second fresh process). Prints medians and the ratio kdsl / PyTorch.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

START_UP = """
import time, numpy as np
started = time.perf_counter()
from kdsl.lang import load_file
from kdsl.pipeline import compile_model
graph = load_file({file!r}).models[{model!r}]
compiled = compile_model(graph, target="cpu")
compiled.warm_up()
print(time.perf_counter() - started)
"""


def median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def start_up_seconds(file: str, model: str, cache: str) -> float:
    env = {**os.environ, "KDSL_CACHE_DIR": cache}
    code = START_UP.format(file=file, model=model)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def torch_mnist_lstm(batch: int):
    """The same network in PyTorch: LSTM(64) -> BatchNorm (Keras epsilon and momentum) -> Linear -> softmax CE."""
    import torch

    lstm = torch.nn.LSTM(28, 64, batch_first=True)
    norm = torch.nn.BatchNorm1d(64, eps=1e-3, momentum=0.01)
    head = torch.nn.Linear(64, 10)
    params = [*lstm.parameters(), *norm.parameters(), *head.parameters()]
    x = torch.randn(batch, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def train_step():
        for p in params:
            p.grad = None
        _, (h, _) = lstm(x)
        loss = torch.nn.functional.cross_entropy(head(norm(h[-1])), y)
        loss.backward()

    def forward():
        with torch.no_grad():
            _, (h, _) = lstm(x)
            torch.softmax(head(norm.eval()(h[-1])), -1)
        norm.train()

    return train_step, forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file", nargs="?", default=str(ROOT / "examples" / "mnist_lstm.kd"))
    parser.add_argument("--model", default="MnistLSTM")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()

    import scipy.linalg  # noqa: F401  (load SciPy's BLAS before limiting its threads)
    from threadpoolctl import threadpool_limits

    from kdsl.lang import load_file
    from kdsl.pipeline import compile_model

    with tempfile.TemporaryDirectory() as cache:
        cold = start_up_seconds(args.file, args.model, cache)
        warm = start_up_seconds(args.file, args.model, cache)

    graph = load_file(args.file).models[args.model]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, args.batch).astype(np.int32)
    rows = []
    with threadpool_limits(args.threads):
        reference = compile_model(graph, target="numpy")
        serial = compile_model(graph, target="cpu", parallel=False)
        compiled = compile_model(graph, target="cpu")
        for model in (serial, compiled):
            model.weights = [w.copy() for w in reference.weights]
        backends = (("kdsl numpy", reference), ("kdsl cpu, 1 thread", serial), ("kdsl cpu", compiled))
        for name, model in backends:
            train = median_ms(lambda m=model: m.train_step([x], [y]), args.repeat)
            rows.append((name, train, median_ms(lambda m=model: m.forward(x), args.repeat)))
        try:
            import torch

            torch.set_num_threads(args.threads)
            train_step, forward = torch_mnist_lstm(args.batch)
            name = f"pytorch {torch.__version__}"
            rows.append((name, median_ms(train_step, args.repeat), median_ms(forward, args.repeat)))
        except ImportError:
            print("(PyTorch not installed: no reference row)")

    import numba

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}, numba {numba.__version__}, {args.threads} threads")
    print(f"model {args.model}, batch {args.batch}, medians of {args.repeat} runs")
    torch_row = rows[-1] if rows[-1][0].startswith("pytorch") else None
    print(f"{'backend':<22}{'train step ms':>15}{'forward ms':>12}{'train / torch':>15}{'forward / torch':>17}")
    for name, train, infer in rows:
        ratios = f"{train / torch_row[1]:>15.2f}{infer / torch_row[2]:>17.2f}" if torch_row else ""
        print(f"{name:<22}{train:>15.2f}{infer:>12.2f}{ratios}")
    print(f"cpu backend: cold compile + first step {cold:.1f} s; cached start-up (fresh process) {warm:.2f} s")


if __name__ == "__main__":
    main()
