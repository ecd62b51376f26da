"""Synthetic token sequences, generated at load time, so that the text examples train with no download.

Not real text: each sequence is filler token ids drawn at random, with one of ten keywords (the ids
1 to 10) planted at three random places; the label is which keyword, 0 to 9 (chance: 10%). The filler
is drawn from the ids above 10, and 0, the padding id, never appears. To tell the classes apart a model
has to notice the keyword wherever it appears and carry it to the sequence's end, what recurrent layers
are for. The same seed gives the same sequences on every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KEYWORDS = 10
COPIES = 3


def plant(rng: np.random.Generator, count: int, length: int, vocabulary: int) -> tuple[np.ndarray, np.ndarray]:
    """`count` sequences of `length` ids below `vocabulary`, int32, each with its keyword planted `COPIES` times
    (two places may coincide); and which keyword each holds, 0 to 9."""
    tokens = rng.integers(KEYWORDS + 1, vocabulary, (count, length), dtype=np.int32)
    which = rng.integers(0, KEYWORDS, count, dtype=np.int32)
    for _ in range(COPIES):
        tokens[np.arange(count), rng.integers(0, length, count)] = which + 1
    return tokens, which


@dataclass(frozen=True)
class Keywords:
    """Sequences of `length` token ids below `vocabulary`, labelled by their keyword; seed 0."""

    length: int
    vocabulary: int = 1000
    train: int = 2000
    test: int = 500

    def load_data(self) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        """`(x_train, y_train), (x_test, y_test)`: int32 token ids (N, length) and labels (N,)."""
        rng = np.random.default_rng(0)
        return plant(rng, self.train, self.length, self.vocabulary), plant(rng, self.test, self.length, self.vocabulary)
