"""How a dataset's arrays are named, and their check against a model before anything is compiled.

An `.npz` for `kdsl train`, `evaluate` and `predict` holds, for a model with one input and one output,
`x_train`, `y_train`, `x_test`, `y_test`; for several, one array per input and output name:
`x_train/<input>`, `y_train/<output>`, `x_test/<input>`, `y_test/<output>` (a model with one input or
output may name it too). The named datasets are seen through the same keys, so every message names
the key at fault.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from kdsl.catalogue.args import FnSpec
from kdsl.errors import KdslError, did_you_mean
from kdsl.ir.graph import Graph
from kdsl.ir.types import TensorType
from kdsl.passes.losses import target_type

GROUPS = ("x_train", "y_train", "x_test", "y_test")
LAYOUT = (
    "An .npz holds x_train, y_train, x_test, y_test for a model with one input and one output; for several, "
    "one array per name: x_train/<input>, y_train/<output>, x_test/<input>, y_test/<output> (a model with one "
    "input or output may name it too). uint8 arrays for f32 inputs are images: they are scaled to [0, 1]."
)

Arrays = np.ndarray | Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Signature:
    """What a model reads, its inputs' types by name (`x`), and is trained against, its targets' (`y`)."""

    model: str
    x: dict[str, TensorType]
    y: dict[str, TensorType]

    @classmethod
    def of(cls, graph: Graph, losses: Sequence[FnSpec]) -> Signature:
        """The signature of `graph` trained with `losses`, one per output."""
        inputs = {value.name: value.type for value in graph.inputs}
        return cls(graph.name, inputs, {v.name: target_type(loss, v.type) for v, loss in zip(graph.outputs, losses)})

    def expected(self) -> str:
        """The keys an .npz for this model holds, with their types."""
        sides = (("x", self.x), ("y", self.y))
        keys = [f"{side}_train{_name(names, name)}: {names[name]}" for side, names in sides for name in names]
        return f"an .npz for `{self.model}` holds " + ", ".join(keys) + ", and the same with _test for the test split"


@dataclass(frozen=True)
class Data:
    """A dataset's arrays by key (`x_train`, `y_test/main`, ...), and where they come from, for messages."""

    source: str
    arrays: dict[str, np.ndarray]

    @classmethod
    def from_splits(cls, source: str, splits: tuple[tuple[Arrays, Arrays], tuple[Arrays, Arrays]]) -> Data:
        """From `(x_train, y_train), (x_test, y_test)` as `load_data()` returns them: arrays, or dicts by name."""
        arrays = {}
        for group, value in zip(GROUPS, (array for split in splits for array in split)):
            if isinstance(value, Mapping):
                arrays.update({f"{group}/{name}": array for name, array in value.items()})
            else:
                arrays[group] = value
        return cls(source, arrays)

    @classmethod
    def read(cls, path: str) -> Data:
        """The arrays of an `.npz`, as its keys name them."""
        if not zipfile.is_zipfile(path):  # np.load would take it for one array, or try to unpickle it
            raise KdslError(f"{path} is not an .npz (a zip of .npy arrays)", hint=LAYOUT)
        try:
            with np.load(path) as data:
                return cls(path, {key: data[key] for key in data.files})
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:  # damaged, or holding Python objects
            raise KdslError(f"{path}: cannot read its arrays ({error})", hint=LAYOUT) from None

    def by_name(self, signature: Signature, groups: Sequence[str] = GROUPS) -> dict[str, dict[str, np.ndarray]]:
        """The arrays of `groups` (such as `x_test`) by the model's input or output names, checked: no key the
        model does not read, none missing, shapes and dtypes as the model's types say, one count of samples
        per split; uint8 arrays for f32 inputs scaled to [0, 1]."""
        self._known_keys(signature)
        found: dict[str, dict[str, np.ndarray]] = {}
        for split in dict.fromkeys(group.partition("_")[2] for group in groups):
            counts = {}
            for group in (g for g in groups if g.endswith(split)):
                found[group] = {}
                for name in _names(signature, group):
                    key, found[group][name] = self._array(signature, group, name)
                    counts[key] = len(found[group][name])
            if len(set(counts.values())) > 1:
                raise KdslError(f"{self.source}: the {split} arrays hold different numbers of samples: {counts}")
        return found

    def _known_keys(self, signature: Signature) -> None:
        for key in self.arrays:
            group, slash, name = key.partition("/")
            if group not in GROUPS:
                raise KdslError(f"{self.source} holds `{key}`, which kdsl does not read", hint=LAYOUT)
            names, what = _names(signature, group), _what(group)
            if slash and name not in names:
                raise KdslError(
                    f"{self.source} holds `{key}`, but model `{signature.model}` has no {what} `{name}`",
                    hint=did_you_mean(name, names) or f"its {what}s: {', '.join(names)}",
                )
            if not slash and len(names) != 1:
                named = ", ".join(f"{group}/{n}" for n in names)
                raise KdslError(
                    f"{self.source} holds one array `{key}`, but model `{signature.model}` has {len(names)} "
                    f"{what}s: {', '.join(names)}",
                    hint=f"name one array per {what}: {named}",
                )
            if not slash and f"{group}/{next(iter(names))}" in self.arrays:
                raise KdslError(f"{self.source} holds both `{key}` and `{group}/{next(iter(names))}`")

    def _array(self, signature: Signature, group: str, name: str) -> tuple[str, np.ndarray]:
        """The array of one input or target, and the key it has in the file."""
        names = _names(signature, group)
        expected, what = names[name], _what(group)
        keys = [group + _name(names, name), f"{group}/{name}"]
        key = next((k for k in keys if k in self.arrays), None)
        if key is None:
            model = signature.model
            raise KdslError(f"{self.source} has no `{keys[0]}`, for model `{model}`'s {what} `{name}` ({expected})")
        array = np.asarray(self.arrays[key])
        dims = [None if isinstance(d, str) else d for d in expected.dims]
        shape = list(array.shape)
        if what == "target":  # labels may have or lack a last axis of 1, as Keras takes them
            dims, shape = _squeezed(dims), _squeezed(shape)
        fits = len(shape) == len(dims) and all(d is None or d == s for d, s in zip(dims, shape))
        if not fits or array.dtype.kind not in ("iu" if expected.dtype == "i32" else "biuf"):
            raise KdslError(
                f"{self.source}: `{key}` holds {array.dtype} {array.shape}, but model `{signature.model}`'s {what} "
                f"`{name}` is {expected}" + (" (integers)" if expected.dtype == "i32" else "")
            )
        if what == "input" and expected.dtype == "f32" and array.dtype == np.uint8:
            array = array.astype(np.float32) / 255
        return key, array


def _names(signature: Signature, group: str) -> dict[str, TensorType]:
    return signature.x if group.startswith("x") else signature.y


def _what(group: str) -> str:
    return "input" if group.startswith("x") else "target"


def _name(names: Mapping[str, TensorType], name: str) -> str:
    """The key's suffix for `name`: none for a model's only input or output, else `/name`."""
    return "" if len(names) == 1 else f"/{name}"


def _squeezed(shape: list) -> list:
    return shape[:-1] if len(shape) > 1 and shape[-1] == 1 else shape
