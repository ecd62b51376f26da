"""Datasets as Keras provides them (`kdsl.datasets.mnist.load_data()`), and the data `kdsl train` reads.

`load` gives a named dataset (see `kdsl.catalogue.datasets`) or an `.npz` laid out as `layout` says;
`for_model` checks it against a model before anything is compiled.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kdsl.datasets import fashion_mnist, fashion_small, mnist, mnist_small
from kdsl.datasets.headlines import Headlines
from kdsl.datasets.keywords import Keywords
from kdsl.datasets.layout import GROUPS, LAYOUT, Data, Signature
from kdsl.errors import KdslError, did_you_mean

SHIPPED = {  # no download: in kdsl's files, or generated
    "mnist_small": mnist_small,
    "fashion_small": fashion_small,
    "keywords_50": Keywords(50),
    "keywords_100": Keywords(100),
    "headlines": Headlines(),
}
NAMED = {**SHIPPED, "mnist": mnist, "fashion_mnist": fashion_mnist}

__all__ = ["GROUPS", "LAYOUT", "NAMED", "SHIPPED", "Data", "Signature", "fashion_mnist", "fashion_small", "for_model",
           "load", "mnist", "mnist_small"]  # fmt: skip


def load(name_or_path: str) -> Data:
    """A named dataset, or the arrays of an `.npz`."""
    if name_or_path in NAMED:
        return Data.from_splits(name_or_path, NAMED[name_or_path].load_data())
    if Path(name_or_path).suffix == ".npz":
        if not Path(name_or_path).is_file():
            raise KdslError(f"no file {name_or_path}", hint=LAYOUT)
        return Data.read(name_or_path)
    hint = did_you_mean(name_or_path, NAMED) or f"name one of {', '.join(NAMED)}, or give an .npz's path"
    raise KdslError(f"no dataset {name_or_path!r}", hint=hint)


def for_model(data: Data, signature: Signature, groups: Sequence[str] = GROUPS) -> dict[str, dict[str, np.ndarray]]:
    """`data.by_name`: its arrays of `groups` by the model's input and output names, checked; when they do not fit,
    a hint naming the shipped datasets that do."""
    try:
        return data.by_name(signature, groups)
    except KdslError as error:
        if error.hint is None or data.source in NAMED:  # a named dataset's keys are not the user's to rename
            fitting = [name for name in SHIPPED if name != data.source and _fits(name, signature)]
            verb = "fits" if len(fitting) == 1 else "fit"
            fits = f"{', '.join(fitting)} {verb} `{signature.model}`: --data {fitting[0]}" if fitting else None
            error.hint = fits or signature.expected()
        raise


def _fits(name: str, signature: Signature) -> bool:
    try:
        load(name).by_name(signature)
    except KdslError:
        return False
    return True
