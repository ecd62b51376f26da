"""Keras's `keras.regularizers`: weight penalties added to the loss, `kernel_regularizer=regularizers.L2(0.01)`.

Each gives the spec of the `.kd` function of the same name (`l2(0.01)`), so a model saves and loads with it.
"""

from __future__ import annotations

from kdsl.catalogue.args import FnSpec
from kdsl.catalogue.functions import REGULARIZERS

__all__ = ["L1", "L1L2", "L2", "l1", "l1_l2", "l2"]


def L1(l1: float = 0.01) -> FnSpec:
    """Adds `l1 · Σ|w|` to the loss."""
    return REGULARIZERS.checked(FnSpec("l1", {"l1": l1}))


def L2(l2: float = 0.01) -> FnSpec:
    """Adds `l2 · Σw²` to the loss (no factor ½)."""
    return REGULARIZERS.checked(FnSpec("l2", {"l2": l2}))


def L1L2(l1: float = 0.0, l2: float = 0.0) -> FnSpec:
    """Adds `l1 · Σ|w| + l2 · Σw²` to the loss (both 0 unless given, as in Keras)."""
    return REGULARIZERS.checked(FnSpec("l1_l2", {"l1": l1, "l2": l2}))


l1, l2, l1_l2 = L1, L2, L1L2
