"""The datasets a train block's `data = ...` or `--data` may name, and what each holds.

Here, below the language, so that `kdsl check` refuses a misspelled name; `kdsl.datasets` loads them.
"""

from __future__ import annotations

from typing import Any

from kdsl.catalogue.args import ArgError, describe
from kdsl.errors import did_you_mean

DATASETS = {
    "mnist_small": "2,000 + 500 MNIST digits, shipped: images (N, 28, 28), labels 0-9",
    "fashion_small": "2,000 + 500 Fashion-MNIST clothes, shipped: images (N, 28, 28), labels 0-9",
    "keywords_50": "synthetic: 50 token ids below 1,000, labelled 0-9 by the keyword planted in them",
    "keywords_100": "synthetic: 100 token ids below 1,000, labelled 0-9 by the keyword planted in them",
    "headlines": "synthetic: words (100 token ids below 10,000) and extra (5 numbers); main and aux, 0 or 1",
    "mnist": "MNIST, 60,000 + 10,000 digits, downloaded once: images (N, 28, 28), labels 0-9",
    "fashion_mnist": "Fashion-MNIST, 60,000 + 10,000 clothes, downloaded once: images (N, 28, 28), labels 0-9",
}


def dataset(value: Any) -> str:
    """A train block's `data`: a dataset's name, or the path of an `.npz` (relative to the `.kd` file)."""
    if isinstance(value, str) and (value in DATASETS or value.endswith(".npz")):
        return value
    hint = isinstance(value, str) and did_you_mean(value, DATASETS)
    raise ArgError(
        f"no dataset {describe(value)}", hint=hint or f"name one of {', '.join(DATASETS)}, or quote an .npz's path"
    )
