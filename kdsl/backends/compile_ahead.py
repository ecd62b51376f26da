"""Compiling an entry point of a generated CPU module in a second process while this one compiles another.

Numba compiles one function at a time, under a lock of the whole process, so a model's two entry points
(`train_step`, and `forward` for the validation data) compiled one after the other, on one core. A second
process now compiles the later entries into Numba's disk cache meanwhile, on another core, and this one loads
them from there when it gets to them. Only where a second core is there, none of those entries' functions is in
the cache yet, and the process is not one of several an MPI launcher started (they take every core already).
Should the second process fail, this one compiles those entries itself, as before.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from kdsl.distribute.communicator import launched_size

TIMEOUT = 600  # seconds to wait for the second process before compiling here
# an entry's zero arguments, as the second process makes them: (shape, dtype name) each
Arguments = list[tuple[tuple[int, ...], str]]


@dataclass
class Ahead:
    """The entries a second process is compiling; `wait()` before calling one of them."""

    entries: set[str] = field(default_factory=set)
    process: subprocess.Popen | None = None

    def wait(self) -> None:
        """Once the second process has ended (or been stopped after TIMEOUT), its entries load from the cache, or
        compile here where it failed."""
        if self.process is None:
            return
        try:
            self.process.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


def compile_ahead(module: ModuleType, entries: dict[str, Arguments], split: bool | None) -> Ahead:
    """Start compiling `entries` (each with the arguments its warm-up call takes) of the generated `module` in a
    second process, where it pays (see the module's docstring)."""
    wanted = {name: arguments for name, arguments in entries.items() if not _cached(module, name)}
    if not wanted or (os.cpu_count() or 1) < 2 or launched_size() > 1:
        return Ahead()
    job = {"path": module.__file__, "entries": wanted, "split": split}
    # kdsl found as this process found it, and the cache this process uses (a temporary one, maybe)
    found = {"PYTHONPATH": os.pathsep.join(sys.path), "KDSL_CACHE_DIR": str(Path(module.__file__).parent)}
    process = subprocess.Popen(
        [sys.executable, "-m", __name__],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **found},
    )
    assert process.stdin is not None
    with process.stdin:
        process.stdin.write(json.dumps(job))
    return Ahead(set(wanted), process)


def _cached(module: ModuleType, entry: str) -> bool:
    """Whether Numba's disk cache holds any of `entry`'s functions (their index files lie beside the module)."""
    path = Path(module.__file__)
    return any((path.parent / "__pycache__").glob(f"{path.stem}._{entry}_*.nbi"))


def _compile(job: dict) -> None:
    """In the second process: import the module as the first one did and call each entry once on zeros."""
    import numpy as np

    from kdsl.backends.modules import load_module

    module = load_module(Path(job["path"]).read_text())
    for entry, arguments in job["entries"].items():
        arrays = [np.zeros(shape, dtype) for shape, dtype in arguments]
        getattr(module, entry)(*arrays, split=job["split"])


if __name__ == "__main__":
    _compile(json.load(sys.stdin))
