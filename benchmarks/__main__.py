"""kdsl against PyTorch on the reference workloads, side by side in one run: `python -m benchmarks`.

Each workload (see `benchmarks.workloads`) alternates kdsl and PyTorch, each side in a worker process
of its own (see `benchmarks.sides`), after a warm-up run of each, and reports medians, the ratio
kdsl / PyTorch (time), kdsl's achieved GFLOP/s and its share of this machine's float32 GEMM rate (a
1024³ NumPy matmul, measured in the same run). The datasets come from $KDSL_DATA (see
kdsl.datasets). `--chart` draws the ratios (needs matplotlib); `--compile` adds the cold and cached
compile of every example (several minutes).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata

import numpy as np

from benchmarks.compile_times import compile_times
from benchmarks.compile_times import markdown as compile_markdown
from benchmarks.sides import Side
from benchmarks.workloads import WORKLOADS, Race

PAUSE = 0.2  # seconds between turns, for the other side's spinning threads to go to sleep
TURN = 0.05  # shortest turn in seconds: a faster workload runs several times per turn


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def alternate(index: int, race: Race, ours: Side, theirs: Side | None) -> tuple[float, float | None]:
    """Median seconds per run over `race.repeat` turns of each side; a turn lasts at least TURN seconds."""
    sides = (ours, theirs) if theirs else (ours,)
    calls = {side: max(1, math.ceil(TURN / side.time(index))) for side in sides}
    times: dict[Side, list[float]] = {side: [] for side in sides}
    for _ in range(race.repeat):
        for side in sides:
            time.sleep(PAUSE)
            times[side].append(side.time(index, calls[side]))
    return statistics.median(times[ours]), statistics.median(times[theirs]) if theirs else None


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
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, default=WORKLOADS, help="run these workloads alone")
    parser.add_argument("--chart", metavar="PNG", help="draw the ratios into this file")
    parser.add_argument("--compile", action="store_true", help="also time cold and cached compiles of the examples")
    args = parser.parse_args()
    has_torch = importlib.util.find_spec("torch") is not None
    if not has_torch:
        print("PyTorch is not installed: kdsl alone")
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    versions = ", ".join(f"{name} {metadata.version(name)}" for name in ("numpy", "numba", "torch")[: 2 + has_torch])
    print(f"machine: {machine}, Python {platform.python_version()}, {versions}; {args.threads} threads")
    peak = gemm_rate()
    print(f"float32 GEMM (1024³, NumPy): {peak:.0f} GFLOP/s")
    ours = Side(torch_side=False, quick=args.quick, threads=args.threads, only=tuple(args.only))
    theirs = Side(torch_side=True, quick=args.quick, threads=args.threads, only=tuple(args.only)) if has_torch else None
    results = []
    for index, race in enumerate(ours.races):
        kdsl_s, torch_s = alternate(index, race, ours, theirs)
        results.append((race, kdsl_s, torch_s))
        print(f"  {race.name}: {race.value(kdsl_s):.3g}" + (f" against {race.value(torch_s):.3g}" if torch_s else ""))
    for side in (ours, theirs) if theirs else (ours,):
        side.close()
    print()
    print(table(results, peak))
    if args.chart:
        chart(results, args.chart, machine)
    if args.compile:
        print()
        print(compile_markdown(compile_times()))


if __name__ == "__main__":
    main()
