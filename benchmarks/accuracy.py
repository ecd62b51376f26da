"""Does kdsl learn as well as the frameworks? Fixed recipes for the examples' models on real data, three seeds each.

    KDSL_DATA=../shared/data python benchmarks/accuracy.py [--seeds 0 1 2]

Sequential MNIST (`examples/mnist_lstm.kd`): SGD 0.01, batch 64, one epoch; and Adam 1e-3,
three epochs. Fashion-MNIST (`examples/fashion_mlp.kd`): SGD 0.01, batch 32, five epochs,
the first 5,000 training images held out for validation. Optimizer, batch size and epochs are
given here, whatever the examples' train blocks say (their loss and metric are used). Prints
test accuracy per seed, the median, and the wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

import kdsl
from kdsl.datasets import fashion_mnist, mnist
from kdsl.runtime.optimizers import SGD, Adam

ROOT = Path(__file__).resolve().parent.parent


def run(file: str, dataset, seed: int, optimizer, epochs: int = 1, batch_size: int = 64, held_out: int = 0):
    (x, y), (x_test, y_test) = dataset.load_data()
    x, x_test = x.astype(np.float32) / 255, x_test.astype(np.float32) / 255
    model = kdsl.load_model_file(ROOT / "examples" / file)
    model.compile(optimizer=optimizer, seed=seed)
    validation = (x[:held_out], y[:held_out]) if held_out else None
    model.fit(x[held_out:], y[held_out:], batch_size=batch_size, epochs=epochs, verbose=0,
              validation_data=validation)  # fmt: skip
    return model.evaluate(x_test, y_test, batch_size=256, return_dict=True)["accuracy"]


RECIPES = {
    "mnist_lstm.kd, SGD 0.01, batch 64, 1 epoch": lambda seed: run("mnist_lstm.kd", mnist, seed, SGD(0.01)),
    "mnist_lstm.kd, Adam 1e-3, batch 64, 3 epochs": lambda seed: run("mnist_lstm.kd", mnist, seed, Adam(1e-3), 3),
    "fashion_mlp.kd, SGD 0.01, batch 32, 5 epochs, 5,000 held out": lambda seed: run(
        "fashion_mlp.kd", fashion_mnist, seed, SGD(0.01), epochs=5, batch_size=32, held_out=5000
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    for recipe, train in RECIPES.items():
        started = time.perf_counter()
        accuracies = [train(seed) for seed in args.seeds]
        elapsed = (time.perf_counter() - started) / len(args.seeds)
        shown = ", ".join(f"{a:.4f}" for a in accuracies)
        print(f"{recipe}: test accuracy {shown}; median {statistics.median(accuracies):.4f}; {elapsed:.0f} s per run")


if __name__ == "__main__":
    main()
