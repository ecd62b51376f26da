"""Synthetic headlines, generated at load time, for the two-input, two-output example `examples/headline.kd`.

Not real news: `words` are 100 word ids below 10,000 with a keyword planted as in `kdsl.datasets.keywords`;
the keywords 1 to 5 are liked, 6 to 10 are not. `extra` are five numbers drawn from N(0, 0.4²). The targets:
`aux`, which the words alone decide, is 1 when the keyword is a liked one; `main` is 1 when the keyword's
sentiment (+1 liked, -1 not) plus the sum of the extra numbers is positive, so it needs both inputs (the words
alone are right about it 87% of the time). Either is 1 half of the time. The same seed gives the same data on
every machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdsl.datasets.keywords import KEYWORDS, plant

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Headlines:
    """Inputs `words` and `extra`, targets `main` and `aux`, by name as the example's model names them; seed 0."""

    train: int = 2000
    test: int = 500

    def load_data(self) -> tuple[tuple[Arrays, Arrays], tuple[Arrays, Arrays]]:
        """`(x_train, y_train), (x_test, y_test)`: dicts of arrays by input and output name."""
        rng = np.random.default_rng(0)
        return _split(rng, self.train), _split(rng, self.test)


def _split(rng: np.random.Generator, count: int) -> tuple[Arrays, Arrays]:
    words, keyword = plant(rng, count, 100, 10_000)
    liked = keyword < KEYWORDS // 2
    extra = rng.normal(0, 0.4, (count, 5)).astype(np.float32)
    main = np.where(liked, 1, -1) + extra.sum(axis=1) > 0
    targets = {"main": main[:, None].astype(np.float32), "aux": liked[:, None].astype(np.float32)}
    return {"words": words, "extra": extra}, targets
