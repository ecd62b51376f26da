"""kdsl against PyTorch and Keras on the reference workloads, side by side in one run: `python -m benchmarks`.

Each workload (see `benchmarks.workloads`) alternates kdsl, PyTorch and Keras (those installed; Keras
runs W1 to W4), each side in a worker process of its own (see `benchmarks.sides`), after a warm-up run
of each, and reports medians, the ratio kdsl / PyTorch (time), Keras's speed-up Keras / kdsl (time),
kdsl's achieved GFLOP/s and its share of this machine's float32 GEMM rate (a 1024³ NumPy matmul,
measured in the same run), and each workload's limit on this machine (see `benchmarks.limits`). The
datasets come from $KDSL_DATA (see kdsl.datasets). `--chart` draws the ratios (needs matplotlib);
`--compile` adds the cold and cached compile of every example (several minutes).
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
from benchmarks.limits import limit_seconds
from benchmarks.sides import Side
from benchmarks.workloads import REFERENCES, WORKLOADS, Race

PAUSE = 0.2  # seconds between turns, for the other side's spinning threads to go to sleep
TURN = 0.05  # shortest turn in seconds: a faster workload runs several times per turn


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# (race, median seconds per run by side: "kdsl", and each reference that runs the race)
Result = tuple[Race, dict[str, float]]


def alternate(index: int, race: Race, sides: dict[str, Side]) -> dict[str, float]:
    """Median seconds per run over `race.repeat` turns of each side that runs the race; a turn lasts at least
    TURN seconds."""
    sides = {name: side for name, side in sides.items() if side.runs[index]}
    calls = {name: max(1, math.ceil(TURN / side.time(index))) for name, side in sides.items()}
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(race.repeat):
        for name, side in sides.items():
            time.sleep(PAUSE)
            times[name].append(side.time(index, calls[name]))
    return {name: statistics.median(runs) for name, runs in times.items()}


def gemm_rate() -> float:
    """GFLOP/s of a 1024³ float32 matmul through NumPy's BLAS: this machine's practical peak."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    seconds = min(timed(lambda: a @ a) for _ in range(5))
    return 2 * 1024**3 / seconds / 1e9


def table(results: list[Result], peak: float, keras: bool) -> str:
    """Markdown: each side's figure, kdsl / PyTorch and Keras / kdsl (time), kdsl's rate, the workload's limit on
    this machine (see `benchmarks.limits`) and how near kdsl is to it; Keras's columns if run."""
    head = ["workload", "kdsl", "PyTorch", "kdsl / PyTorch (time)"]
    head += ["Keras", "Keras / kdsl (time)"] if keras else []
    head += ["kdsl GFLOP/s", "of GEMM peak", "limit", "limit / kdsl (time)"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for race, seconds in results:
        ours, torch_s, keras_s = seconds["kdsl"], seconds.get("torch"), seconds.get("keras")
        cells = [race.name, f"{race.value(ours):.3g}"]
        cells += ["—", "—"] if torch_s is None else [f"{race.value(torch_s):.3g}", f"{ours / torch_s:.2f}"]
        if keras:
            cells += ["—", "—"] if keras_s is None else [f"{race.value(keras_s):.3g}", f"{keras_s / ours:.1f}×"]
        rate = race.flops / ours / 1e9
        limit = limit_seconds(race.flops, peak, race.streamed)
        cells += [f"{rate:.1f}", f"{rate / peak:.0%}", f"{race.value(limit):.3g}", f"{limit / ours:.0%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chart(results: list[Result], path: str, machine: str) -> None:
    """A horizontal bar per workload: kdsl's time as a fraction of PyTorch's (below 1: kdsl is faster)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no chart (pip install matplotlib)")
        return
    measured = [(race.name.rsplit(" (", 1)[0], s["kdsl"] / s["torch"]) for race, s in results if "torch" in s]
    names, ratios = zip(*reversed(measured))
    figure, axes = plt.subplots(figsize=(9, 0.42 * len(names) + 1.4))
    axes.barh(names, ratios, color=["#2a7" if r < 1 else "#c43" for r in ratios])
    axes.axvline(1.0, color="black", linewidth=1)
    axes.set_xlim(0, max(1.15, max(ratios) + 0.15))  # room for the labels past the bars
    for y, ratio in enumerate(ratios):
        axes.text(ratio + 0.01, y, f"{ratio:.2f}", va="center", fontsize=8)
    axes.set_xlabel("kdsl time / PyTorch time (lower is better)")
    axes.set_title(f"kdsl against PyTorch on the CPU ({machine})", fontsize=9)
    axes.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print(f"chart: {path}")


def cpu_report() -> str:
    """The CPU by model and by what LLVM (and so Numba) compiles for: `Intel Xeon ... (sapphirerapids; AVX-512)`."""
    import llvmlite.binding as llvm

    model = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")), None)
    features = llvm.get_host_cpu_features()
    isa = "AVX-512" if features.get("avx512f") else "AVX2" if features.get("avx2") else "no AVX2"
    fma = ", FMA" if features.get("fma") else ""
    return f"{model or platform.processor() or platform.machine()} ({llvm.get_host_cpu_name()}; {isa}{fma})"


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo") as file:
            return file.read().splitlines()
    except OSError:
        return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, a quarter of W1's and W2's epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, default=WORKLOADS, help="run these workloads alone")
    parser.add_argument("--chart", metavar="PNG", help="draw the ratios into this file")
    parser.add_argument("--compile", action="store_true", help="also time cold and cached compiles of the examples")
    parser.add_argument("--cpu-report", action="store_true", help="print the CPU's model and ISA, and stop")
    args = parser.parse_args()
    if args.cpu_report:
        print(f"cpu: {cpu_report()}")
        return
    references = [name for name in REFERENCES if all(importlib.util.find_spec(p) for p in REFERENCES[name])]
    for name in sorted(set(REFERENCES) - set(references)):
        print(f"{name} is not installed: no {name} side (pip install {' '.join(REFERENCES[name])})")
    machine = f"{cpu_report()}, {os.cpu_count()} cores"
    packages = ["numpy", "numba", *(package for name in references for package in REFERENCES[name])]
    distributions = metadata.packages_distributions()  # "tensorflow" may come as tensorflow-cpu
    versions = ", ".join(f"{name} {metadata.version(distributions.get(name, [name])[0])}" for name in packages)
    print(f"machine: {machine}, Python {platform.python_version()}, {versions}; {args.threads} threads")
    peak = gemm_rate()
    print(f"float32 GEMM (1024³, NumPy): {peak:.0f} GFLOP/s")
    sides = {name: Side(name, args.quick, args.threads, tuple(args.only)) for name in ("kdsl", *references)}
    results = []
    for index, race in enumerate(sides["kdsl"].races):
        seconds = alternate(index, race, sides)
        results.append((race, seconds))
        print(f"  {race.name}: " + ", ".join(f"{name} {race.value(s):.3g}" for name, s in seconds.items()))
    for side in sides.values():
        side.close()
    after = gemm_rate()  # a VM's neighbours may slow either measurement: the faster one is the machine's
    print(f"float32 GEMM after the races: {after:.0f} GFLOP/s")
    print()
    print(table(results, max(peak, after), keras="keras" in references))
    if args.chart:
        chart(results, args.chart, machine)
    if args.compile:
        print()
        print(compile_markdown(compile_times()))


if __name__ == "__main__":
    main()
