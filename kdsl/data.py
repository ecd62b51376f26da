"""`kdsl.data.Dataset`: batches from in-memory arrays, the subset of `tf.data` that `fit` needs.

    Dataset.from_tensor_slices((x, y)).shuffle(seed=0).batch(64)

Elements keep their structure (tuples, dicts of arrays); each pass over a shuffled
dataset draws a new order. `fit`, `evaluate` and `predict` also take any iterable or
generator of batches.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def _map(structure: Any, fn) -> Any:
    if isinstance(structure, dict):
        return {k: _map(v, fn) for k, v in structure.items()}
    if isinstance(structure, tuple | list):
        return type(structure)(_map(v, fn) for v in structure)
    return fn(structure)


def _leaves(structure: Any) -> list[np.ndarray]:
    if isinstance(structure, dict):
        return [leaf for v in structure.values() for leaf in _leaves(v)]
    if isinstance(structure, tuple | list):
        return [leaf for v in structure for leaf in _leaves(v)]
    return [structure]


class Dataset:
    def __init__(self, data: Any, batch_size: int | None = None, drop_remainder: bool = False,
                 rng: np.random.Generator | None = None):  # fmt: skip
        self.data, self.batch_size, self.drop_remainder, self.rng = data, batch_size, drop_remainder, rng
        sizes = {len(leaf) for leaf in _leaves(data)}
        if len(sizes) != 1:
            raise ValueError(f"all arrays of a dataset need the same first dimension, got sizes {sorted(sizes)}")
        self.count = sizes.pop()

    @classmethod
    def from_tensor_slices(cls, data: Any) -> Dataset:
        return cls(_map(data, np.asarray))

    def shuffle(self, buffer_size: int | None = None, seed: int | None = None) -> Dataset:
        """A new order each pass (the whole dataset is the buffer: `buffer_size` is accepted and not needed)."""
        return Dataset(self.data, self.batch_size, self.drop_remainder, np.random.default_rng(seed))

    def batch(self, batch_size: int, drop_remainder: bool = False) -> Dataset:
        return Dataset(self.data, batch_size, drop_remainder, self.rng)

    def __len__(self) -> int:
        size = self.batch_size or 1
        return self.count // size if self.drop_remainder else -(-self.count // size)

    def __iter__(self) -> Iterator[Any]:
        order = self.rng.permutation(self.count) if self.rng is not None else np.arange(self.count)
        size = self.batch_size or 1
        for start in range(0, len(self) * size, size):
            rows = order[start : start + size]
            batch = _map(self.data, lambda a, rows=rows: a[rows])
            yield batch if self.batch_size else _map(batch, lambda a: a[0])
