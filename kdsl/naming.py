"""Keras-style automatic layer names: `dense`, `dense_1`, `dense_2`, skipping names already taken."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

KEYWORDS = frozenset({"model", "train", "layer", "true", "false", "none", "True", "False", "None"})


def is_valid_name(name: object) -> bool:
    """Whether `name` can name a model, input or layer in `.kd` text (ASCII, as the grammar's names are: what is
    saved as `.kd` must load back)."""
    return isinstance(name, str) and name.isascii() and name.isidentifier() and name not in KEYWORDS


class LayerNamer:
    """Hands out layer names for one model, in the order layers are created."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.avoided: set[str] = set()
        self.counts: Counter[str] = Counter()

    def peek(self, base: str) -> str:
        count = self.counts[base]
        while (name := base if count == 0 else f"{base}_{count}") in self.taken or name in self.avoided:
            count += 1
        return name

    def next(self, base: str) -> str:
        name = self.peek(base)
        self.counts[base] = int(name.rsplit("_", 1)[1]) + 1 if name != base else 1
        self.taken.add(name)
        return name

    def wrapped(self, config: Mapping[str, Any]) -> None:
        """Use up the name of the layer a wrapper holds (and of any it holds in turn): Keras names that layer when
        it is made, before the wrapper, so the next `dense` after a `TimeDistributed(Dense(...))` is `dense_1`."""
        inner = config.get("layer")
        if inner is not None and hasattr(inner, "kind"):
            self.wrapped(inner.config)
            self.next(inner.kind.name)

    def avoid(self, names: Iterable[str]) -> None:
        """Skip `names` when naming layers, yet let the user give them: a nested model's layers, named when that
        model was made (and kept apart under its name)."""
        self.avoided.update(names)

    def reserve(self, name: str) -> bool:
        """Claim a name given by the user; False when it is already taken."""
        if name in self.taken:
            return False
        self.taken.add(name)
        return True


_model_names: Counter[str] = Counter()


def model_name(base: str) -> str:
    """Keras's automatic model name: `functional`, `functional_1`, ... (and `sequential`, ...), numbered across the
    process as Keras's `auto_name` numbers them, so that two models nested in one have different names."""
    count = _model_names[base]
    _model_names[base] += 1
    return base if count == 0 else f"{base}_{count}"


def snake_case(name: str) -> str:
    """Keras's name for an instance of a class of the user's own: `MinimalGRUCell` -> `minimal_gru_cell`."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()
