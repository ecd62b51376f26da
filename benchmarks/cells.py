"""Recurrent cells of one's own: one SGD training step on sequential MNIST's shapes, kdsl against PyTorch (the
cell as an `nn.Module` in a Python loop over time, and that loop under `torch.jit.script`) and JAX (`lax.scan`
under `jit`, where JAX is installed), with kdsl's built-in layers of the same kind beside them.

    python -m benchmarks.cells [--repeat 50] [--threads 2]

The cells: the minimal gated unit (MGU: f = σ([x, h]·W_f + b_f), c = tanh(x·W_c + b_c), h ← f·h + (1 − f)·c), an
LSTM written as a cell (Keras's equations, gates from [x, h]) and a peephole LSTM (the cell state read by the
gates through weights of the cell's own), each followed by Dense(10) and softmax
cross-entropy; batch 64, 28 steps of 28 inputs, 64 units. kdsl's side is `train_on_batch` (SGD); PyTorch's
`zero_grad`, forward, backward and `step`; JAX's one jitted function returning the new weights. Medians of
`--repeat` steps after warm-up, each side in a process of its own; "per FLOP" divides a step's time by its work as
kdsl counts it, so a custom cell and a built-in layer of another size compare.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable

import numpy as np

from benchmarks.train_step import median_ms

BATCH, STEPS, INPUTS, UNITS, CLASSES = 64, 28, 28, 64, 10
LEARNING_RATE = 0.01
SIDES = {"kdsl": "kdsl", "torch": "torch", "jax": "jax"}  # each side, and the package it needs
XLA_THREADS = "--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads={}"

CELLS_KD = f"""
cell MinimalGatedUnit(units) (x, h: f32[batch, units]) -> h {{
    f = dense(concatenate(x, h), units, activation=sigmoid)
    c = dense(x, units, activation=tanh)
    h = f * h + (1 - f) * c
}}

cell LongShortTermMemory(units) (x, h: f32[batch, units], c: f32[batch, units]) -> h {{
    i = dense(concatenate(x, h), units, activation=sigmoid)
    f = dense(concatenate(x, h), units, activation=sigmoid)
    g = dense(concatenate(x, h), units, activation=tanh)
    o = dense(concatenate(x, h), units, activation=sigmoid)
    c = f * c + i * g
    h = o * tanh(c)
}}

cell PeepholeLSTM(units) (x, h: f32[batch, units], c: f32[batch, units]) -> h {{
    peep_i = weight([units])
    peep_f = weight([units])
    peep_o = weight([units])
    i = sigmoid(dense(concatenate(x, h), units) + peep_i * c)
    f = sigmoid(dense(concatenate(x, h), units) + peep_f * c)
    g = dense(concatenate(x, h), units, activation=tanh)
    c = f * c + i * g
    o = sigmoid(dense(concatenate(x, h), units) + peep_o * c)
    h = o * tanh(c)
}}

model CustomPeepholeLSTM(pixels: f32[batch, {STEPS}, {INPUTS}]) -> probs {{
    h     = rnn(pixels, PeepholeLSTM({UNITS}))
    probs = dense(h, {CLASSES}, activation=softmax)
}}

model CustomMGU(pixels: f32[batch, {STEPS}, {INPUTS}]) -> probs {{
    h     = rnn(pixels, MinimalGatedUnit({UNITS}))
    probs = dense(h, {CLASSES}, activation=softmax)
}}

model CustomLSTM(pixels: f32[batch, {STEPS}, {INPUTS}]) -> probs {{
    h     = rnn(pixels, LongShortTermMemory({UNITS}))
    probs = dense(h, {CLASSES}, activation=softmax)
}}

model BuiltinGRU(pixels: f32[batch, {STEPS}, {INPUTS}]) -> probs {{
    h     = gru(pixels, {UNITS})
    probs = dense(h, {CLASSES}, activation=softmax)
}}

model BuiltinLSTM(pixels: f32[batch, {STEPS}, {INPUTS}]) -> probs {{
    h     = lstm(pixels, {UNITS})
    probs = dense(h, {CLASSES}, activation=softmax)
}}
""" + "".join(
    f"train {name} {{ loss = sparse_categorical_crossentropy  optimizer = sgd({LEARNING_RATE}) }}\n"
    for name in ("CustomPeepholeLSTM", "CustomMGU", "CustomLSTM", "BuiltinGRU", "BuiltinLSTM")
)


def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((BATCH, STEPS, INPUTS), dtype=np.float32), rng.integers(0, CLASSES, BATCH).astype(np.int32)


# --- kdsl --------------------------------------------------------------------------------------------------------


def kdsl_steps() -> dict[str, tuple[Callable[[], object], int]]:
    """Each model's training step and its FLOPs."""
    import kdsl
    from benchmarks.workloads import flops_per_call
    from kdsl.lang import load

    program = load(CELLS_KD, "cells.kd")
    x, y = data()
    steps = {}
    for name, graph in program.models.items():
        model = kdsl.Model.from_graph(graph)
        model.compile()  # the train block's SGD and loss
        steps[name] = ((lambda model=model: model.train_on_batch(x, y)), flops_per_call(graph, BATCH, True))
    return steps


# --- PyTorch -----------------------------------------------------------------------------------------------------


def torch_steps(script: bool) -> dict[str, Callable[[], object]]:
    import torch
    from torch import nn

    class MinimalGatedUnit(nn.Module):
        def __init__(self):
            super().__init__()
            self.f, self.c = nn.Linear(INPUTS + UNITS, UNITS), nn.Linear(INPUTS, UNITS)

        def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
            f = torch.sigmoid(self.f(torch.cat([x, h], 1)))
            return f * h + (1 - f) * torch.tanh(self.c(x))

    class Classifier(nn.Module):
        """The cell over every step in a Python loop, then Dense(10)."""

        def __init__(self):
            super().__init__()
            self.cell, self.head, self.units = MinimalGatedUnit(), nn.Linear(UNITS, CLASSES), UNITS

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            h = torch.zeros(pixels.shape[0], self.units)
            for t in range(pixels.shape[1]):
                h = self.cell(pixels[:, t], h)
            return self.head(h)

    class BuiltinGRU(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru, self.head = nn.GRU(INPUTS, UNITS, batch_first=True), nn.Linear(UNITS, CLASSES)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.head(self.gru(pixels)[1][0])

    x, y = (torch.from_numpy(a) for a in data())
    y = y.long()
    loss = nn.CrossEntropyLoss()
    steps = {}
    networks = {"MGU": Classifier()} if script else {"MGU": Classifier(), "GRU (built-in)": BuiltinGRU()}
    for name, network in networks.items():
        network = torch.jit.script(network) if script else network
        optimizer = torch.optim.SGD(network.parameters(), lr=LEARNING_RATE)

        def step(network=network, optimizer=optimizer):
            optimizer.zero_grad()
            loss(network(x), y).backward()
            optimizer.step()

        steps[name] = step
    return steps


# --- JAX ---------------------------------------------------------------------------------------------------------


def jax_step() -> Callable[[], object]:
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    weights = {
        "wf": rng.standard_normal((INPUTS + UNITS, UNITS), dtype=np.float32) * 0.1,
        "bf": np.zeros(UNITS, np.float32),
        "wc": rng.standard_normal((INPUTS, UNITS), dtype=np.float32) * 0.1,
        "bc": np.zeros(UNITS, np.float32),
        "wo": rng.standard_normal((UNITS, CLASSES), dtype=np.float32) * 0.1,
        "bo": np.zeros(CLASSES, np.float32),
    }
    x, y = data()

    def loss(p, pixels, labels):
        def cell(h, x_t):
            f = jax.nn.sigmoid(jnp.concatenate([x_t, h], 1) @ p["wf"] + p["bf"])
            h = f * h + (1 - f) * jnp.tanh(x_t @ p["wc"] + p["bc"])
            return h, None

        h, _ = jax.lax.scan(cell, jnp.zeros((pixels.shape[0], UNITS)), jnp.swapaxes(pixels, 0, 1))
        logits = jax.nn.log_softmax(h @ p["wo"] + p["bo"])
        return -jnp.mean(jnp.take_along_axis(logits, labels[:, None], 1))

    @jax.jit
    def train(p, pixels, labels):
        grads = jax.grad(loss)(p, pixels, labels)
        return jax.tree_util.tree_map(lambda w, g: w - LEARNING_RATE * g, p, grads)

    state = [jax.tree_util.tree_map(jnp.asarray, weights)]

    def step():
        state[0] = train(state[0], x, y)
        jax.block_until_ready(state[0])

    return step


def side_rows(side: str, repeat: int, threads: int) -> list[tuple[str, float, int | None]]:
    """One side's (name, ms per step, FLOPs or None) rows, timed in this process."""
    if side == "kdsl":
        return [(f"kdsl {name}", median_ms(step, repeat), flops) for name, (step, flops) in kdsl_steps().items()]
    if side == "torch":
        import torch

        torch.set_num_threads(threads)
        rows = []
        for script in (False, True):
            for name, step in torch_steps(script).items():
                rows.append((f"{'PyTorch jit.script' if script else 'PyTorch'} {name}", median_ms(step, repeat), None))
        return rows
    return [("JAX lax.scan MGU", median_ms(jax_step(), repeat), None)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", choices=SIDES, help="time one side here (each runs in a process of its own)")
    args = parser.parse_args()
    if args.side:
        print(json.dumps(side_rows(args.side, args.repeat, args.threads)))
        return
    from benchmarks.__main__ import cpu_report

    print(f"CPU: {cpu_report()}; {args.threads} threads; batch {BATCH}, {STEPS} steps, {INPUTS} inputs, {UNITS} units")
    rows: list[tuple[str, float, int | None]] = []
    environment = {**os.environ, "NUMBA_NUM_THREADS": str(args.threads), "XLA_FLAGS": XLA_THREADS.format(args.threads)}
    for side, package in SIDES.items():
        if importlib.util.find_spec(package) is None:
            continue
        command = [sys.executable, "-m", "benchmarks.cells", "--side", side, "--repeat", str(args.repeat),
                   "--threads", str(args.threads)]  # fmt: skip
        done = subprocess.run(command, env=environment, capture_output=True, text=True, check=True)
        rows += [tuple(row) for row in json.loads(done.stdout.strip().splitlines()[-1])]
    mgu = next(ms for name, ms, _ in rows if name == "kdsl CustomMGU")
    print(f"{'side':<32}{'ms / step':>10}{'GFLOP/s':>9}{'vs kdsl MGU':>13}")
    for name, ms, flops in rows:
        rate = f"{flops / ms / 1e6:9.1f}" if flops else " " * 9
        print(f"{name:<32}{ms:10.2f}{rate}{ms / mgu:13.2f}")


if __name__ == "__main__":
    main()
