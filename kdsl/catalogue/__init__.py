"""The layer catalogue: every layer kdsl knows, by its `.kd` name, its aliases and its Keras class name."""

from __future__ import annotations

from kdsl.catalogue.base import LayerKind
from kdsl.catalogue.cells import CellRNN, CellWeight
from kdsl.catalogue.core import (
    Activation,
    BatchNormalization,
    Dense,
    Dropout,
    Embedding,
    Flatten,
    RepeatVector,
    Reshape,
)
from kdsl.catalogue.merge import Add, Concatenate, Multiply
from kdsl.catalogue.recurrent import GRU, LSTM, SimpleRNN
from kdsl.catalogue.stacked import StackedRNN
from kdsl.catalogue.wrappers import Bidirectional, TimeDistributed

KINDS: tuple[LayerKind, ...] = tuple(
    kind()
    for kind in (
        Dense, Activation, Flatten, Reshape, Dropout, BatchNormalization, Embedding, SimpleRNN, LSTM, GRU,
        CellRNN, CellWeight, StackedRNN, Bidirectional, TimeDistributed, Concatenate, Add, Multiply, RepeatVector,
    )
)  # fmt: skip

LAYERS: dict[str, LayerKind] = {kind.name: kind for kind in KINDS}
_LOOKUP: dict[str, LayerKind] = {
    spelling: kind for kind in KINDS for spelling in (kind.name, kind.keras, *kind.aliases)
}


def lookup(name: str) -> LayerKind | None:
    """The layer a name refers to: `.kd` name (`batch_normalization`), alias (`batch_norm`) or Keras class."""
    return _LOOKUP.get(name)


def spellings() -> list[str]:
    return list(_LOOKUP)
