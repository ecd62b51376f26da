"""Data-parallel training on 1 and 2 processes: kdsl's MirroredStrategy on MPI against PyTorch's
DistributedDataParallel (gloo), on W1 (examples/mnist_lstm.kd) and W4 (examples/gru_stack.kd).

    python -m benchmarks.distributed [--steps 20] [--repeat 5] [--only w1 w4]

Each process runs one thread (Numba's, BLAS's and PyTorch's), so two processes use two cores. Both sides train
on the same global batch (64), split across the processes, with the same optimizer (W1: SGD 0.01, W4: Adam); the
data are random (the speed does not depend on the values). kdsl's side runs `Model.fit` over `--steps` batches;
PyTorch's a plain loop of as many steps. Reported: samples/s (median of `--repeat` runs, after a warm-up run),
and kdsl's time in the gradient all-reduce per step and its share of the step (waiting for the slower process
included: the all-reduce is where the processes meet).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GLOBAL_BATCH = 64
WORKLOADS = {"w1": ("mnist_lstm.kd", "W1 LSTM(64)+BN sequential MNIST, SGD"),
             "w4": ("gru_stack.kd", "W4 Embedding-GRU(256)-SimpleRNN(128), Adam")}  # fmt: skip
ONE_THREAD = {name: "1" for name in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                     "MKL_NUM_THREADS")}  # fmt: skip


def data(workload: str, samples: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    if workload == "w1":
        x = rng.random((samples, 28, 28), dtype=np.float32)
    else:
        x = rng.integers(0, 1000, (samples, 50)).astype(np.int32)
    return x, rng.integers(0, 10, samples).astype(np.int64)


# --- the two sides, each run in every process mpiexec launched ---------------------------------------------------


def kdsl_side(workload: str, steps: int, repeat: int) -> dict | None:
    import kdsl

    strategy = kdsl.distribute.MirroredStrategy()
    with strategy.scope():
        model = kdsl.load_model_file(ROOT / "examples" / WORKLOADS[workload][0])
        optimizer = kdsl.optimizers.SGD(0.01) if workload == "w1" else kdsl.optimizers.Adam()
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    x, y = data(workload, steps * GLOBAL_BATCH)
    model.fit(x[: 2 * GLOBAL_BATCH], y[: 2 * GLOBAL_BATCH], batch_size=GLOBAL_BATCH, verbose=0)  # compiles, warms
    times, reduce_times = [], []
    for _ in range(repeat):
        strategy.barrier()
        strategy.reduce_seconds = 0.0
        started = time.perf_counter()
        model.fit(x, y, batch_size=GLOBAL_BATCH, verbose=0, shuffle=False)
        times.append(time.perf_counter() - started)
        reduce_times.append(strategy.reduce_seconds)
    if not strategy.is_chief:
        return None
    seconds = statistics.median(times)
    reduce_seconds = statistics.median(reduce_times)
    return {"samples_per_s": steps * GLOBAL_BATCH / seconds, "reduce_ms_per_step": 1000 * reduce_seconds / steps,
            "reduce_share": reduce_seconds / seconds}  # fmt: skip


def torch_side(workload: str, steps: int, repeat: int, port: int) -> dict | None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    rank, size = _launched_rank()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
    torch.manual_seed(0)
    network = _w1_network(torch) if workload == "w1" else _w4_network(torch)
    model = DistributedDataParallel(network)
    optimizer = (torch.optim.SGD(model.parameters(), lr=0.01) if workload == "w1"
                 else torch.optim.Adam(model.parameters()))  # fmt: skip
    x, y = (torch.from_numpy(a) for a in data(workload, steps * GLOBAL_BATCH))
    share = GLOBAL_BATCH // size

    def train(batches: int) -> None:
        for step in range(batches):
            rows = slice(step * GLOBAL_BATCH + rank * share, step * GLOBAL_BATCH + (rank + 1) * share)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x[rows]), y[rows]).backward()
            optimizer.step()

    train(2)
    times = []
    for _ in range(repeat):
        dist.barrier()
        started = time.perf_counter()
        train(steps)
        times.append(time.perf_counter() - started)
    dist.destroy_process_group()
    if rank:
        return None
    return {"samples_per_s": steps * GLOBAL_BATCH / statistics.median(times)}


def _launched_rank() -> tuple[int, int]:
    return int(os.environ.get("PMI_RANK", 0)), int(os.environ.get("PMI_SIZE", 1))


def _w1_network(torch):
    nn = torch.nn

    class W1(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.norm, self.head = nn.LSTM(28, 64, batch_first=True), nn.BatchNorm1d(64), nn.Linear(64, 10)

        def forward(self, x):
            _, (h, _) = self.lstm(x)
            return self.head(self.norm(h[-1]))

    return W1()


def _w4_network(torch):
    nn = torch.nn

    class W4(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.gru = nn.Embedding(1000, 64), nn.GRU(64, 256, batch_first=True)
            self.rnn, self.head = nn.RNN(256, 128, batch_first=True), nn.Linear(128, 10)

        def forward(self, tokens):
            sequence, _ = self.gru(self.embed(tokens))
            _, h = self.rnn(sequence)
            return self.head(h[-1])

    return W4()


# --- the driver ---------------------------------------------------------------------------------------------------


def launch(side: str, workload: str, ranks: int, steps: int, repeat: int) -> dict:
    """One side's result, from its chief, run as `ranks` processes under mpiexec."""
    mpiexec = Path(sys.executable).parent / "mpiexec"
    command = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(ranks), sys.executable, "-m",
               "benchmarks.distributed", "--side", side, "--workload", workload, "--steps", str(steps),
               "--repeat", str(repeat), "--port", str(_free_port())]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **ONE_THREAD})
    if done.returncode != 0:
        raise RuntimeError(f"{side} on {ranks} processes failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20, help="global batches (of 64) per timed run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--side", choices=["kdsl", "torch"], help=argparse.SUPPRESS)  # a process mpiexec launched
    parser.add_argument("--workload", choices=list(WORKLOADS), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        if args.side == "kdsl":
            result = kdsl_side(args.workload, args.steps, args.repeat)
        else:
            result = torch_side(args.workload, args.steps, args.repeat, args.port)
        if result is not None:
            print(json.dumps(result))
        return
    from benchmarks.__main__ import cpu_report

    print(f"machine: {cpu_report()}, {os.cpu_count()} cores; one thread per process; global batch {GLOBAL_BATCH}, "
          f"{args.steps} steps a run, median of {args.repeat}")  # fmt: skip
    print("| workload | processes | kdsl samples/s | all-reduce ms/step | all-reduce share | PyTorch DDP (gloo) "
          "samples/s | kdsl / PyTorch (speed) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for workload in args.only:
        for ranks in (1, 2):
            ours = launch("kdsl", workload, ranks, args.steps, args.repeat)
            theirs = launch("torch", workload, ranks, args.steps, args.repeat)
            print(f"| {WORKLOADS[workload][1]} | {ranks} | {ours['samples_per_s']:.0f} | "
                  f"{ours['reduce_ms_per_step']:.2f} | {100 * ours['reduce_share']:.1f}% | "
                  f"{theirs['samples_per_s']:.0f} | {ours['samples_per_s'] / theirs['samples_per_s']:.2f} |",
                  flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
