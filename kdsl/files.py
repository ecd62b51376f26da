"""Files kdsl writes (generated modules, metadata, weights, checkpoints, logs), always whole.

Each is written to a temporary file beside its destination and renamed over it, so a
reader, or a crash mid-write, never sees half a file.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def write_atomically(path: str | os.PathLike, data: bytes | str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_bytes(data.encode() if isinstance(data, str) else data)
    partial.replace(path)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Named arrays in NumPy's `.npz` format."""
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()
