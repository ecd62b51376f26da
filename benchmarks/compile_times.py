"""Cold and cached compile of every example, in fresh processes: `python -m benchmarks.compile_times`.

Cold: `kdsl compile FILE` with an empty kernel cache (generate code, compile forward and training
step with Numba). Cached: the same command again in a new process, which loads the kernels from
disk. Also a cached `kdsl train examples/mnist_lstm.kd --epochs 1 --batch-size 64` on the shipped MNIST sample, as
a whole process: an upper bound on the time to its first training step.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KDSL = [sys.executable, "-c", "from kdsl.cli import main; main()"]


def seconds(arguments: list[str], cache: str) -> float:
    env = {**os.environ, "KDSL_CACHE_DIR": cache}
    started = time.perf_counter()
    subprocess.run([*KDSL, *arguments], env=env, check=True, capture_output=True, cwd=tempfile.gettempdir())
    return time.perf_counter() - started


def compile_times() -> list[tuple[str, float, float]]:
    """(example, cold seconds, cached seconds) for every example; the last row is the cached `kdsl train`."""
    rows = []
    for file in sorted(EXAMPLES.glob("*.kd")):
        with tempfile.TemporaryDirectory() as cache:
            cold = seconds(["compile", str(file)], cache)
            rows.append((file.name, cold, seconds(["compile", str(file)], cache)))
            if file.name == "mnist_lstm.kd":
                arguments = ["train", str(file), "--epochs", "1", "--batch-size", "64", "--out"]
                seconds([*arguments, os.path.join(cache, "m.kdz")], cache)
                train = seconds([*arguments, os.path.join(cache, "m.kdz")], cache)
    rows.append(("`kdsl train mnist_lstm.kd --epochs 1 --batch-size 64` (cached, whole process)", float("nan"), train))
    return rows


def markdown(rows: list[tuple[str, float, float]]) -> str:
    lines = ["| example | cold compile (s) | cached start (s) |", "|---|---|---|"]
    for name, cold, warm in rows:
        lines.append(f"| {name} | {'—' if cold != cold else f'{cold:.1f}'} | {warm:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(compile_times()))
