"""kdsl against PyTorch on the reference workloads, side by side in one run: `python -m benchmarks`.

Each workload (see `benchmarks.workloads`) alternates kdsl and PyTorch after a warm-up run of each and
reports medians, the ratio kdsl / PyTorch (time), kdsl's achieved GFLOP/s and its share of this
machine's float32 GEMM rate (a 1024³ NumPy matmul, measured in the same run). The datasets come
from $KDSL_DATA (see kdsl.datasets). `--chart` draws the ratios (needs matplotlib); `--compile`
adds the cold and cached compile of every example (several minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from benchmarks.compile_times import compile_times
from benchmarks.compile_times import markdown as compile_markdown
from benchmarks.workloads import Race, races


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def alternate(race: Race) -> tuple[float, float | None]:
    """Median seconds of `race.repeat` runs of kdsl and of PyTorch, interleaved, after one warm-up run of each."""
    race.kdsl()
    if race.torch:
        race.torch()
    ours, theirs = [], []
    for _ in range(race.repeat):
        ours.append(timed(race.kdsl))
        if race.torch:
            theirs.append(timed(race.torch))
    return statistics.median(ours), statistics.median(theirs) if theirs else None


def gemm_rate() -> float:
    """GFLOP/s of a 1024³ float32 matmul through NumPy's BLAS: this machine's practical peak."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    seconds = min(timed(lambda: a @ a) for _ in range(5))
    return 2 * 1024**3 / seconds / 1e9


def table(results: list[tuple[Race, float, float | None]], peak: float) -> str:
    lines = [
        "| workload | kdsl | PyTorch | kdsl / PyTorch (time) | kdsl GFLOP/s | of GEMM peak |",
        "|---|---|---|---|---|---|",
    ]
    for race, ours, theirs in results:
        rate = race.flops / ours / 1e9
        theirs_text, ratio = ("—", "—") if theirs is None else (f"{race.value(theirs):.3g}", f"{ours / theirs:.2f}")
        lines.append(f"| {race.name} | {race.value(ours):.3g} | {theirs_text} | {ratio} | {rate:.1f} | "
                     f"{rate / peak:.0%} |")  # fmt: skip
    return "\n".join(lines)


def chart(results: list[tuple[Race, float, float | None]], path: str, machine: str) -> None:
    """A horizontal bar per workload: kdsl's time as a fraction of PyTorch's (below 1: kdsl is faster)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)")
        return
    measured = [(race.name.rsplit(" (", 1)[0], ours / theirs) for race, ours, theirs in results if theirs]
    names, ratios = zip(*reversed(measured))
    figure, axes = plt.subplots(figsize=(9, 0.42 * len(names) + 1.4))
    axes.barh(names, ratios, color=["#2a7" if r < 1 else "#c43" for r in ratios])
    axes.axvline(1.0, color="black", linewidth=1)
    for y, ratio in enumerate(ratios):
        axes.text(ratio + 0.01, y, f"{ratio:.2f}", va="center", fontsize=8)
    axes.set_xlabel("kdsl time / PyTorch time (lower is better)")
    axes.set_title(f"kdsl against PyTorch on the CPU ({machine})", fontsize=9)
    axes.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"chart: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, a quarter of W1's and W2's epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chart", metavar="PNG", help="draw the ratios into this file")
    parser.add_argument("--compile", action="store_true", help="also time cold and cached compiles of the examples")
    args = parser.parse_args()
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
        print("PyTorch is not installed: kdsl alone")

    import numba

    numba.set_num_threads(args.threads)
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"machine: {machine}, Python {platform.python_version()}, numpy {np.__version__}, numba {numba.__version__}"
          + (f", PyTorch {torch.__version__}" if torch else "") + f"; {args.threads} threads")  # fmt: skip
    peak = gemm_rate()
    print(f"float32 GEMM (1024³, NumPy): {peak:.0f} GFLOP/s")
    results = []
    for race in races(torch, args.quick):
        ours, theirs = alternate(race)
        results.append((race, ours, theirs))
        print(f"  {race.name}: {race.value(ours):.3g}" + (f" against {race.value(theirs):.3g}" if theirs else ""))
    print()
    print(table(results, peak))
    if args.chart:
        chart(results, args.chart, machine)
    if args.compile:
        print()
        print(compile_markdown(compile_times()))


if __name__ == "__main__":
    main()
