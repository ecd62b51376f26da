"""Reading and writing the files: the `.keras` zip archive (`metadata.json`, `config.json`, `model.weights.h5`), the
legacy `.h5` whole-model file and `.weights.h5` weights files.

A file that is not what its name says, is truncated or holds more than its model needs is refused with a
`KdslError` naming it; each archive member's size is checked before it is read.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import json
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdsl.errors import KdslError, KdslUnsupportedError
from kdsl.files import write_atomically
from kdsl.ir.graph import Graph, TrainSpec
from kdsl.keras_files.model_in import Imported, build_model
from kdsl.keras_files.model_out import model_config
from kdsl.keras_files.optimizer_state import optimizer_variables, restore_optimizer_variables
from kdsl.keras_files.training import train_spec
from kdsl.keras_files.weights_h5 import (
    h5py_module,
    open_h5,
    read_keras_weights,
    read_legacy_weights,
    read_optimizer_variables,
    weight_paths,
    write_keras_weights,
)
from kdsl.passes.infer import infer_shapes
from kdsl.runtime.saving import KERAS_SUFFIXES

if TYPE_CHECKING:
    from kdsl.model import Model

KERAS_FORMAT = "3.0.0"  # the Keras version whose archive layout kdsl writes
TEXT_LIMIT = 16 << 20  # bytes of `config.json`, `metadata.json` or a legacy file's configuration, at most
WEIGHTS_OVERHEAD = 16 << 20  # bytes an HDF5 weights file may spend besides the weights' data
OPTIMIZER_COPIES = 4  # a Keras archive may hold the optimizer's slots too: up to this many arrays per weight
# what reading a damaged file raises (h5py reports damage the HDF5 library finds as RuntimeError)
DAMAGE = (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError, UnicodeDecodeError, OSError,
          OverflowError, EOFError, zipfile.BadZipFile, zlib.error)  # fmt: skip


def is_keras_file(path: str | Path) -> bool:
    """Whether the name is one of Keras's files: `.keras`, `.h5`, `.hdf5` (`.weights.h5` among them)."""
    return str(path).lower().endswith(KERAS_SUFFIXES)


def read_keras_model(
    path: str | Path, model_class: type[Model], partial: bool = False, sequential_class: type[Model] | None = None
) -> Imported:
    """The kdsl model (made by `model_class`, kdsl's `Model`, or `sequential_class` for a Sequential model) of a
    Keras `.keras` archive or legacy `.h5` file:
    layers, weights and train block. With `partial`, the model up to the layers kdsl refuses, which `left_out`
    lists (a partial model has no train block: its outputs are not the ones the model was compiled for)."""
    if not Path(path).is_file():
        raise KdslError(f"{path}: no such file")
    try:
        if str(path).lower().endswith(".keras"):
            return _load_archive(path, model_class, partial, sequential_class)
        return _load_legacy(path, model_class, partial, sequential_class)
    except KdslError as error:
        if error.message.startswith(str(path)):
            raise
        raise KdslError(f"{path}: {error.message}", hint=error.hint) from None
    except DAMAGE as error:
        raise KdslError(f"{path}: not a Keras model file, or damaged ({type(error).__name__}: {error})") from None


def _weights_limit(graph: Graph) -> int:
    return 4 * OPTIMIZER_COPIES * graph.param_count() + WEIGHTS_OVERHEAD


def _member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    try:
        info = archive.getinfo(name)
    except KeyError:
        hint = "a .keras file holds metadata.json, config.json and model.weights.h5"
        raise KdslError(f"not a Keras archive: it has no `{name}`", hint=hint) from None
    if info.file_size > limit:
        raise KdslError(f"`{name}` would unpack to {info.file_size:,} bytes, more than its {limit:,} at most")
    return archive.read(name)


def _json(data: bytes, name: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as error:
        raise KdslError(f"`{name}` is not JSON ({error})") from None


def _load_archive(
    path: str | Path, model_class: type[Model], partial: bool, sequential_class: type[Model] | None
) -> Imported:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise KdslError(f"{path}: not a Keras archive (not a zip file, or truncated)",
                        hint="a .keras file is the zip archive keras.Model.save writes") from None  # fmt: skip
    with archive:
        metadata = _json(_member(archive, "metadata.json", TEXT_LIMIT), "metadata.json")
        version = metadata.get("keras_version") if isinstance(metadata, dict) else None
        if not isinstance(version, str) or not version.startswith("3."):
            raise KdslError(f"written by Keras {version}; kdsl reads the archives of Keras 3",
                            hint="load and save the model with Keras 3 first")  # fmt: skip
        config = _json(_member(archive, "config.json", TEXT_LIMIT), "config.json")
        if "model.weights.npz" in archive.namelist():
            raise KdslError("its weights are in NPZ form; kdsl reads the HDF5 `model.weights.h5`",
                            hint="save it again with Keras's default weights format")  # fmt: skip
        imported = build_model(config, model_class, partial, sequential_class)
        graph = infer_shapes(imported.model.graph)
        h5 = open_h5(_member(archive, "model.weights.h5", _weights_limit(graph)), "model.weights.h5")
        with h5:
            weights = read_keras_weights(h5, graph, imported.paths, "model.weights.h5")
            imported.optimizer_variables = read_optimizer_variables(h5, "model.weights.h5")
    return _finished(imported, weights, config.get("compile_config"), partial)


def _load_legacy(
    path: str | Path, model_class: type[Model], partial: bool, sequential_class: type[Model] | None
) -> Imported:
    h5 = open_h5(str(path), str(path))
    with h5:
        if "model_config" not in h5.attrs:
            raise KdslError("holds no model (no `model_config`): a weights file?",
                            hint="load it into a model with model.load_weights(...)")  # fmt: skip
        config = _json(_attribute(h5, "model_config"), "model_config")
        training = None
        if "training_config" in h5.attrs:
            training = _json(_attribute(h5, "training_config"), "training_config")
        imported = build_model(config, model_class, partial, sequential_class)
        weights = read_legacy_weights(h5, infer_shapes(imported.model.graph), str(path))
    return _finished(imported, weights, training, partial)


def _attribute(h5: Any, name: str) -> bytes:
    """A text attribute of an HDF5 file, refused before it is read when larger than `TEXT_LIMIT`."""
    size = h5.attrs.get_id(name).get_storage_size()
    if size > TEXT_LIMIT:
        raise KdslError(f"its `{name}` holds {size:,} bytes, more than {TEXT_LIMIT:,}")
    value = h5.attrs[name]
    return value.encode() if isinstance(value, str) else bytes(value)


def _finished(imported: Imported, weights: dict, training: Any, partial: bool) -> Imported:
    """The model with its weights and train block; in a partial conversion, compile settings kdsl cannot honour
    are left out (and listed) rather than refused."""
    model = imported.model
    if not imported.left_out:
        try:
            model.graph.train = train_spec(training, model.output_names)
        except KdslUnsupportedError as error:
            if not partial:
                raise
            imported.left_out.append(f"the compile settings: {error.message}")
    state = model.state
    for name, array in zip(state.names, state.weights):
        array[...] = weights[name]
    return imported


def save_keras_model(model: Model, path: str | Path, sequential: bool = False) -> None:
    """A `.keras` archive Keras 3 loads with `keras.models.load_model`: the model's layers (as a Sequential model's
    when `sequential`), weights and, when it has them, its compile settings (or train block) and optimizer state."""
    if not str(path).lower().endswith(".keras"):
        raise KdslError(f"{path}: kdsl writes Keras 3's `.keras` archive, not the legacy HDF5 model file",
                        hint="use a name ending in .keras (Keras 3 loads it), or .kdz for kdsl's own")  # fmt: skip
    graph = _with_training(model)
    config = model_config(graph, sequential)
    metadata = {"keras_version": KERAS_FORMAT, "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("metadata.json", json.dumps(metadata))
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("model.weights.h5", _weights_file(model, graph))
    write_atomically(path, out.getvalue())


def save_keras_weights(model: Model, path: str | Path) -> None:
    """The weights alone, as Keras 3's `save_weights` writes a `.weights.h5` file."""
    if not str(path).endswith(".weights.h5"):
        raise KdslError(f"{path}: Keras's weights files end in `.weights.h5`")
    write_atomically(path, _weights_file(model, infer_shapes(model.graph)))


def load_keras_weights(model: Model, path: str | Path) -> None:
    """Weights from a Keras 3 `.weights.h5` file (or a legacy `.h5` one, layer by layer by name)."""
    if not Path(path).is_file():
        raise KdslError(f"{path}: no such file")
    graph = infer_shapes(model.graph)
    try:
        with open_h5(str(path), str(path)) as h5:
            if "model_weights" in h5 or "layer_names" in h5.attrs:
                weights = read_legacy_weights(h5, graph, str(path))
            else:
                weights = read_keras_weights(h5, graph, weight_paths(graph), str(path))
    except KdslError:
        raise
    except DAMAGE as error:
        raise KdslError(f"{path}: not a Keras weights file, or damaged ({type(error).__name__}: {error})") from None
    model.set_weights([weights[name] for name in model.state.names])


def _weights_file(model: Model, graph: Graph) -> bytes:
    """Keras 3's HDF5 weights file of the model: its weights and, with compile settings, its optimizer's variables."""
    h5py = h5py_module()
    out = io.BytesIO()
    with h5py.File(out, "w") as h5:
        weights = dict(zip(model.state.names, model.get_weights()))
        write_keras_weights(h5, graph, weights, optimizer_variables(model, graph))
    return out.getvalue()


def _with_training(model: Model) -> Graph:
    """The model's typed graph with a train block: that of its compile settings, as Keras saves the last
    `compile()`; if not compiled, its own."""
    graph = infer_shapes(model.graph)
    trainer = getattr(model, "_trainer", None)
    if trainer is not None:
        from kdsl.catalogue.args import FnSpec
        from kdsl.ir.graph import LossTerm

        optimizer = trainer.optimizer.config()
        if isinstance(optimizer["learning_rate"], dict):
            raise KdslError("a learning-rate schedule is not written to Keras files yet")
        names = graph.output_names
        terms = [LossTerm(term.loss, term.weight) for term in trainer.losses]
        metrics = {name: [FnSpec(fn) for _, fn in ms] for name, ms in zip(names, trainer.metrics) if ms}
        losses = {None: terms[0]} if all(term == terms[0] for term in terms) else dict(zip(names, terms))
        if len(names) == 1 and metrics:
            metrics = {None: metrics[names[0]]}
        optimizer_name = optimizer.pop("name")
        graph = dataclasses.replace(graph, train=TrainSpec(losses, FnSpec(optimizer_name, optimizer), metrics))
    return graph


def load_keras_model(path: str | Path, model_class: type[Model], sequential_class: type[Model], compile: bool) -> Model:
    """`keras.models.load_model`: the model of a Keras file, compiled with its compile settings where it has them
    and `compile`, its optimizer then going on from the state Keras saved."""
    imported = read_keras_model(path, model_class, sequential_class=sequential_class)
    model = imported.model
    if compile and model.graph.train is not None:
        try:
            model.compile()
        except KdslError as error:  # compile settings the reading let through, as an empty loss
            raise KdslError(f"{path}: its compile settings: {error.message}", hint=error.hint) from None
        if imported.optimizer_variables:
            restore_optimizer_variables(model, imported.optimizer_variables, str(path))
    return model
