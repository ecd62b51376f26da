"""kdsl's CUDA target against PyTorch on the same GPU (cuDNN's LSTM and GRU): `python -m benchmarks.cuda`.

mnist_lstm: one epoch of real MNIST through `Model.fit` on `target="cuda"`, against a plain PyTorch
loop on the GPU, SGD 0.01, batch 64. DeepBench-style LSTM and GRU shapes (input size = hidden size,
hidden 256 to 1024, batch 16 to 128, 25 to 150 steps): a training step (forward, mean squared error
of the last state, backward; no optimizer update, on both sides) and an inference call, plus an
LSTM(512) at batch 1. kdsl runs each recurrent shape twice: with its time loops as persistent kernels
(the default) and as host loops launching the cell's kernels each step with cuBLAS for the products.
Then the input projections of those shapes: cuBLAS through CuPy against kdsl's tiled Numba kernel.
Prints the GPU, medians of several runs after a warm-up, each side's time over the last side's (PyTorch's,
where it runs) and TFLOP/s, as Markdown for `benchmarks/RESULTS.md`.

Each timed call ends with the device idle: kdsl's calls return host values, and each PyTorch call is
followed by `torch.cuda.synchronize()`. `--smoke` shrinks every shape so that Numba's CUDA simulator
(`NUMBA_ENABLE_CUDASIM=1`) runs the whole script in seconds: a check of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import numpy as np

import kdsl
from benchmarks.train_step import median_ms
from benchmarks.workloads import DEEPBENCH, EXAMPLES, flops_per_call, images, lstm_network
from kdsl.datasets import mnist, mnist_small
from kdsl.errors import KdslError
from kdsl.lang import load
from kdsl.pipeline import compile_model

# (layer, PyTorch module, hidden, batch, steps): DeepBench's recurrent training shapes in the range asked for
SHAPES = [
    ("lstm", "LSTM", 256, 16, 150),
    ("lstm", "LSTM", 512, 64, 50),
    ("lstm", "LSTM", 1024, 128, 25),
    ("gru", "GRU", 512, 32, 50),
    ("gru", "GRU", 1024, 64, 25),
]
BATCH_ONE = ("lstm", "LSTM", 512, 1, 100)  # inference of one sequence: where launches, not FLOPs, set the time
SMOKE = [("lstm", "LSTM", 4, 2, 3), ("gru", "GRU", 4, 2, 3)]


def synchronized(torch, fn: Callable[[], object]) -> Callable[[], None]:
    def run() -> None:
        fn()
        torch.cuda.synchronize()

    return run


@dataclass
class Contest:
    """One workload on the GPU: each side runs it once per call (kdsl with persistent time loops, kdsl with
    host loops where the workload calls the compiled model directly, PyTorch); `flops` is one run's work as
    kdsl's IR counts it."""

    name: str
    unit: str  # "s" or "ms"
    flops: float
    repeat: int
    sides: dict[str, Callable[[], object]]

    def value(self, seconds: float) -> float:
        return 1000 * seconds if self.unit == "ms" else seconds


SIDES = ("kdsl", "kdsl, host loops", "PyTorch")


def mnist_lstm(torch, smoke: bool) -> Contest:
    """One epoch of examples/mnist_lstm.kd through `fit` (a few shrunk batches under --smoke)."""
    source = (EXAMPLES / "mnist_lstm.kd").read_text()
    if smoke:
        source = source.replace("units=64", "units=4").replace("f32[batch, 28, 28]", "f32[batch, 3, 4]")
        rng = np.random.default_rng(0)
        x, y = rng.uniform(0, 1, (12, 3, 4)).astype(np.float32), rng.integers(0, 10, 12)
    else:
        try:
            x, y = images(mnist)
        except KdslError as error:  # no copy of MNIST and no network: what kdsl ships is enough to time an epoch
            print(f"({error.message}: one epoch of the MNIST sample kdsl ships instead)")
            x, y = images(mnist_small)
    graph = next(iter(load(source, "mnist_lstm.kd").models.values()))
    batch = 4 if smoke else 64
    model = kdsl.Model.from_graph(graph)
    model.compile(optimizer=kdsl.optimizers.SGD(0.01), target="cuda")  # PyTorch's, not the file's train block's
    sides = {"kdsl": lambda: model.fit(x, y, batch_size=batch, epochs=1, verbose=0)}
    if torch:
        logits, params = lstm_network(torch, "cuda")
        sgd = torch.optim.SGD(params, lr=0.01)
        tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()

        def epoch() -> None:
            order = torch.randperm(len(tx), device="cuda")
            for start in range(0, len(tx), batch):
                rows = order[start : start + batch]
                sgd.zero_grad()
                torch.nn.functional.cross_entropy(logits(tx[rows]), ty[rows]).backward()
                sgd.step()

        sides["PyTorch"] = synchronized(torch, epoch)
    flops = flops_per_call(graph, batch, training=True, target="cuda") * len(x) / batch
    return Contest(f"mnist_lstm, one epoch of {len(x)} (s)", "s", flops, 3, sides)


def recurrent(torch, layer: str, module: str, hidden: int, batch: int, steps: int, training: bool = True):
    """A training step (when `training`) and an inference call of one recurrent layer at a DeepBench shape;
    one compiled model serves both, so each shape compiles its kernels once a side."""
    graph = load(DEEPBENCH.format(layer=layer, hidden=hidden, steps=steps), "deepbench.kd").models["DeepBench"]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, steps, hidden)).astype(np.float32)
    y = rng.standard_normal((batch, hidden)).astype(np.float32)
    models = {side: compile_model(graph, target="cuda", training=training, persistent=persistent)
              for side, persistent in zip(SIDES, (True, False))}  # fmt: skip
    steps_by_side = {side: (lambda m=model: m.train_step([x], [y])) for side, model in models.items()}
    calls_by_side = {side: (lambda m=model: m.forward(x)) for side, model in models.items()}
    if torch:
        net = getattr(torch.nn, module)(hidden, hidden, batch_first=True).cuda()
        tx, ty = torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda()

        def last_state():
            state = net(tx)[1]
            return (state[0] if isinstance(state, tuple) else state)[-1]

        def step() -> None:
            net.zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(last_state(), ty).backward()

        def infer() -> None:
            with torch.no_grad():
                last_state()

        steps_by_side["PyTorch"], calls_by_side["PyTorch"] = synchronized(torch, step), synchronized(torch, infer)
    shape = f"{module} hidden {hidden}, batch {batch}, {steps} steps"
    inference = Contest(
        f"{shape}: inference (ms)", "ms", flops_per_call(graph, batch, False, target="cuda"), 10, calls_by_side
    )
    if not training:
        return [inference]
    training_flops = flops_per_call(graph, batch, True, target="cuda")
    return [Contest(f"{shape}: training step (ms)", "ms", training_flops, 10, steps_by_side), inference]


def contests(torch, smoke: bool) -> list[Contest]:
    result = [mnist_lstm(torch, smoke)]
    for shape in SMOKE if smoke else SHAPES:
        result += recurrent(torch, *shape)
    return result if smoke else result + recurrent(torch, *BATCH_ONE, training=False)


def products(smoke: bool) -> list[Contest]:
    """The input projections of the DeepBench shapes, (steps·batch × hidden)·(hidden × gates·hidden), outside
    any time loop: cuBLAS through CuPy, what kdsl calls where CuPy is installed, against the tiled Numba kernel
    it falls back to (`kdsl.backends.cuda.gemm`)."""
    from numba import cuda

    from kdsl.backends.cuda import gemm
    from kdsl.backends.cuda.launch import gemm_grid

    shapes = [(8, 4, 12)] if smoke else [(steps * batch, hidden, hidden * (4 if layer == "lstm" else 3))
                                         for layer, _, hidden, batch, steps in SHAPES]  # fmt: skip
    result = []
    for rows, inner, columns in shapes:
        rng = np.random.default_rng(0)
        a, b = (cuda.to_device(rng.standard_normal(s).astype(np.float32)) for s in [(rows, inner), (inner, columns)])
        c = cuda.device_array((rows, columns), np.float32)
        grid = gemm_grid(rows, columns, gemm.TILE)

        def tiled(a=a, b=b, c=c, grid=grid) -> None:
            gemm.gemm_tiled[grid](a, b, c, np.bool_(False), np.bool_(False))
            cuda.synchronize()

        sides = {"tiled Numba kernel": tiled}
        if gemm.CUPY is not None:
            sides["cuBLAS through CuPy"] = lambda a=a, b=b, c=c: (gemm.gemm(a, b, c), cuda.synchronize())
        name = f"product ({rows} x {inner}) · ({inner} x {columns}) (ms)"
        result.append(Contest(name, "ms", 2 * rows * inner * columns, 10, sides))
    return result


def table(results: list[tuple[Contest, dict[str, float]]]) -> str:
    """Markdown: each side's figure, its time over the last side's, and its TFLOP/s."""
    sides = list(dict.fromkeys(side for _, seconds in results for side in seconds))
    if not sides:
        return "(nothing was measured)"
    reference = sides[-1]
    head = [*sides, *(f"{side} / {reference}" for side in sides[:-1]), *(f"{side} TFLOP/s" for side in sides)]
    lines = ["| workload | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for contest, seconds in results:
        cells = [f"{contest.value(seconds[side]):.3g}" if side in seconds else "—" for side in sides]
        last = seconds.get(reference)
        cells += [f"{seconds[side] / last:.2f}" if last and side in seconds else "—" for side in sides[:-1]]
        cells += [f"{contest.flops / seconds[side] / 1e12:.3f}" if side in seconds else "—" for side in sides]
        lines.append(f"| {contest.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, for Numba's CUDA simulator")
    args = parser.parse_args()
    gpus = [device for device in kdsl.devices() if device.kind != "cpu"]
    if not gpus:
        raise SystemExit("no GPU found (with NUMBA_ENABLE_CUDASIM=1, --smoke runs in Numba's simulator)")
    torch = None
    if importlib.util.find_spec("torch"):
        import torch

        torch = torch if torch.cuda.is_available() else None
    found = [name for name in ("numba", "numba-cuda", "cupy-cuda12x", "cupy-cuda13x") if _installed(name)]
    line = f"device: {gpus[0]}; Python {platform.python_version()}, " + ", ".join(
        f"{name} {metadata.version(name)}" for name in found
    )
    if torch:
        tf32 = "on" if torch.backends.cudnn.allow_tf32 else "off"  # kdsl computes in float32 throughout
        line += f", torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()} (its TF32 {tf32})"
    print(line if torch else f"{line}; PyTorch cannot use CUDA here: no reference side")
    for group in (contests(torch, args.smoke), products(args.smoke)):
        results = []
        failures = []
        for contest in group:
            repeat = 1 if args.smoke else contest.repeat
            seconds = {}
            for side, run in contest.sides.items():
                try:
                    seconds[side] = median_ms(run, repeat) / 1000  # after a warm-up call: compiles, buffers, cuDNN
                except Exception as error:  # one side failing must not cost the other sides' numbers
                    failures.append(f"{contest.name}, {side}: {type(error).__name__}: {error}")
                    print(f"  {failures[-1]}", flush=True)
            results.append((contest, seconds))
            times = ", ".join(f"{side} {contest.value(s):.3g}" for side, s in seconds.items())
            print(f"  {contest.name}: {times}", flush=True)
        print()
        print(table(results))
        print("\n".join(["", "Failed:", *failures] if failures else []))
        print()


def _installed(distribution: str) -> bool:
    try:
        metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


if __name__ == "__main__":
    main()
