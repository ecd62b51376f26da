"""Datasets stored as the four gzipped IDX files of MNIST-style image sets: cache, checksum, download, read.

Files are looked for in `$KDSL_DATA/<name>/` if KDSL_DATA is set, else in `~/.kdsl/datasets/<name>/`;
missing files are downloaded from the dataset's mirror into that directory (through a temporary
file, so an interrupted download leaves nothing behind) and every file's SHA-256 is checked.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdsl.errors import KdslError

FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
         "t10k-labels-idx1-ubyte.gz")  # fmt: skip


@dataclass(frozen=True)
class IdxDataset:
    name: str
    mirror: str
    sha256: dict[str, str]

    def directory(self) -> Path:
        root = os.environ.get("KDSL_DATA")
        return Path(root) / self.name if root else Path.home() / ".kdsl" / "datasets" / self.name

    def path(self, file: str) -> Path:
        path = self.directory() / file
        if not path.exists():
            _download(self.mirror + file, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != self.sha256[file]:
            raise KdslError(f"{path} is corrupt (SHA-256 {digest[:12]}…)", hint="delete it to download it again")
        return path

    def load_data(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """`(x_train, y_train), (x_test, y_test)` as Keras returns them: uint8 images (N, 28, 28), labels (N,)."""
        x_train, y_train, x_test, y_test = (read_idx(self.path(f)) for f in FILES)
        return (x_train, y_train), (x_test, y_test)


def read_idx(path: Path) -> np.ndarray:
    """An IDX array: magic 0x0000 08 <rank>, then each dim as a big-endian uint32, then uint8 data."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    if data[:3] != b"\x00\x00\x08":
        raise KdslError(f"{path} is not an IDX file of unsigned bytes")
    rank = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(shape).copy()


def _download(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            out.write(response.read())
    except (urllib.error.URLError, OSError) as error:
        partial.unlink(missing_ok=True)
        raise KdslError(
            f"cannot download {url}: {error}",
            hint=f"put the four IDX files in {path.parent} (or point KDSL_DATA at a directory holding "
            f"{path.parent.name}/)",
        ) from None
    partial.replace(path)
