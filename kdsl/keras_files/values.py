"""Keras's serialized functions and numbers as kdsl's: `{"class_name": "L2", "config": {"l2": 0.01}}` is `l2(0.01)`.

Keras stores float32 settings widened to float64 (`0.009999999776482582`); they are read back as the float32 the
user wrote (`0.01`), and kdsl's settings are written as plain numbers.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from kdsl.catalogue.args import FnSpec
from kdsl.errors import KdslError

# Keras classes whose snake-case name is not kdsl's
RENAMED = {
    "RMSprop": "rmsprop",
    "OrthogonalInitializer": "orthogonal",
    "IdentityInitializer": "identity",
    "L1L2": "l1_l2",
}
KERAS_FUNCTION_MODULES = (None, "keras", "keras.initializers", "keras.regularizers", "keras.losses",
                          "keras.metrics", "keras.optimizers")  # fmt: skip


def snake_case(name: str) -> str:
    """Keras's `to_snake_case`: `SimpleRNN` → `simple_rnn`, `LSTMCell` → `lstm_cell`."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def float32_number(value: float) -> float:
    """A float32 setting widened by Keras, as its shortest float32 text says it (other numbers unchanged)."""
    if not abs(value) <= np.finfo(np.float32).max:  # beyond float32, or not a number: as it is
        return value
    narrowed = np.float32(value)
    return float(str(narrowed)) if float(narrowed) == value else value


def function_spec(value: Any, drop: tuple[str, ...] = ()) -> FnSpec:
    """A serialized Keras function (initializer, regularizer, loss, metric, optimizer) as kdsl's `FnSpec`: its
    class in snake case and its settings, those at None and those named in `drop` left out."""
    if isinstance(value, str):
        return FnSpec(value)
    if not isinstance(value, dict) or not isinstance(value.get("class_name"), str):
        raise KdslError(f"expected a Keras function by name or as its serialized config, got {value!r}"[:200])
    class_name = value["class_name"]
    if value.get("module") not in KERAS_FUNCTION_MODULES or value.get("registered_name") not in (None, class_name):
        raise KdslError(f"`{class_name}` is a custom object, not Keras's own",
                        hint="kdsl builds only Keras's built-in functions; no code in a file is run")  # fmt: skip
    config = value.get("config") or {}
    if not isinstance(config, dict):
        raise KdslError(f"`{class_name}`: its `config` is not a mapping")
    args = {
        key: float32_number(v) if isinstance(v, float) else v
        for key, v in config.items()
        if v is not None and key not in drop
    }
    return FnSpec(RENAMED.get(class_name, snake_case(class_name)), args)


def keras_function(spec: FnSpec, module: str) -> dict[str, Any]:
    """A kdsl function as Keras serializes its class: `l1_l2(l1=0.01)` is `{"class_name": "L1L2", ...}`."""
    class_name = "".join(part.capitalize() for part in spec.name.split("_"))
    return {"module": module, "class_name": class_name, "config": dict(spec.args), "registered_name": None}
