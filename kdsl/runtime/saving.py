"""One file holds a model: `.kdz`, a zip of its `.kd` source, weights, optimizer state and random state, and
the states its stateful RNNs carry into the next batch.

Loading it in a new process and training on gives the weights an uninterrupted run would
have: the optimizer's slots and step count, and the generators that shuffle batches and
draw dropout masks, are all restored. Files are written through a temporary file.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdsl.catalogue.args import FnSpec
from kdsl.errors import KdslError
from kdsl.files import npz_bytes, write_atomically
from kdsl.ir.graph import Graph
from kdsl.lang import load
from kdsl.lang.format import to_kd
from kdsl.passes.lower import carried_states
from kdsl.runtime.optimizers import CLASSES, SLOT_NAMES
from kdsl.runtime.schedules import SCHEDULES

if TYPE_CHECKING:
    from kdsl.model import Model

FORMAT = 1
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")  # Keras's own files (`kdsl.keras_files`), never in kdsl's formats


def _not_keras(path: str | Path, what: str, ours: str) -> None:
    """Refuse a Keras file name rather than put kdsl's own format under it."""
    if str(path).lower().endswith(KERAS_SUFFIXES):
        raise KdslError(f"{path}: kdsl {what} its own format, not Keras's files", hint=f"use a name ending in {ours}")


def save_weights(model: Model, path: str | Path) -> None:
    """The weights alone, by Keras name, as `.npz`."""
    _not_keras(path, "writes weights in", "`.npz`")
    write_atomically(path, npz_bytes(dict(zip(model.state.names, model.state.weights))))


def load_weights(model: Model, path: str | Path) -> None:
    """Weights by Keras name from `.npz`, each checked for its weight's shape and a float type before use."""
    _not_keras(path, "reads weights in", "`.npz`")
    if not Path(path).is_file():
        raise KdslError(f"{path}: no such file")
    state = model.state
    shapes = {name: weight.shape for name, weight in zip(state.names, state.weights)}
    try:
        data = Path(path).read_bytes()
        weights = _arrays(data, path, "the file", shapes)
    except KdslError:
        raise
    except DAMAGE as error:
        raise KdslError(f"{path}: not weights kdsl saved, or damaged ({type(error).__name__}: {error})") from None
    missing = [n for n in state.names if n not in weights]
    if missing:
        raise KdslError(f"{path} has no weights for {', '.join(missing)}")
    model.set_weights([weights[n] for n in state.names])


def save_model(model: Model, path: str | Path) -> None:
    _not_keras(path, "saves models in", "`.kdz`")
    trainer = model.trainer
    optimizer = trainer.optimizer
    state = {
        "format": FORMAT,
        "model": model.name,
        "param_names": trainer.compiled.param_names,
        "compile": {
            "losses": [{"name": t.loss.name, "args": dict(t.loss.args), "weight": t.weight} for t in trainer.losses],
            "metrics": [[shown for shown, _ in ms] for ms in trainer.metrics],
            "optimizer": optimizer.config(),
            "target": trainer.compiled.target,
        },
        "optimizer": {"iterations": optimizer.iterations, "learning_rate": optimizer.learning_rate},
        "random": {"batches": trainer.rng.bit_generator.state, "dropout": trainer.compiled.rng.bit_generator.state},
    }
    slots = {f"{i}/{name}": value for i, named in enumerate(optimizer.slots) for name, value in named.items()}
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model.kd", to_kd(model.graph))
        archive.writestr("state.json", json.dumps(state, indent=1))
        archive.writestr("weights.npz", npz_bytes(dict(zip(trainer.compiled.param_names, trainer.compiled.weights))))
        archive.writestr("optimizer.npz", npz_bytes(slots))
        carried = dict(zip([c.name for c in model.state.carried], model.state.carried_values()))
        archive.writestr("states.npz", npz_bytes(carried))
    write_atomically(path, out.getvalue())


TEXT_LIMIT = 16 << 20  # bytes of `model.kd` or `state.json` read at most
ARRAY_OVERHEAD = 4096  # bytes an .npz spends on each array besides its data, at most
SLOTS_PER_WEIGHT = 3  # the most optimizer slots a weight has (RMSprop's)
DAMAGE = (KeyError, IndexError, TypeError, ValueError, AttributeError, RecursionError, UnicodeDecodeError, OSError,
          OverflowError,
          EOFError, zipfile.BadZipFile, zlib.error)  # fmt: skip


@dataclass
class Saved:
    """What a `.kdz` archive holds, checked: the model's graph, its state, weights (by name, float32, each of its
    weight's shape) and optimizer slots (by `index/slot`, each of its weight's shape)."""

    graph: Graph
    state: dict
    weights: dict[str, np.ndarray]
    slots: dict[str, np.ndarray]
    path: str
    carried: dict[str, np.ndarray]  # stateful RNNs' states, by name (none in archives written before they were)


def read_saved(path: str | Path) -> Saved:
    """The contents of a model saved by `Model.save`. A file kdsl did not write, or one damaged, is refused with a
    `KdslError` naming it and what is wrong, before any of it reaches a kernel."""
    _not_keras(path, "loads models from", "`.kdz`")
    if not Path(path).is_file():
        raise KdslError(f"{path}: no such file")
    if str(path).endswith(".kd"):
        raise KdslError(f"{path} is a model's source, not a saved model",
                        hint=f"train it first (kdsl train {path}), then give the .kdz it saves")  # fmt: skip
    try:
        return _read(path)
    except KdslError:
        raise
    except DAMAGE as error:
        raise KdslError(f"{path}: not a model kdsl saved, or damaged ({type(error).__name__}: {error})") from None


def _read(path: str | Path) -> Saved:
    with zipfile.ZipFile(path) as archive:
        state = json.loads(_member(archive, path, "state.json", TEXT_LIMIT))
        _check_state(path, state)
        graph = load(_member(archive, path, "model.kd", TEXT_LIMIT).decode(), f"{path}:model.kd").models.get(
            state["model"]
        )
        if graph is None:
            raise KdslError(f"{path}: model.kd holds no model `{state['model']}`")
        specs = {f"{layer.name}/{p.name}": p for layer in graph.layers() for p in layer.params or []}
        shapes = {name: spec.shape for name, spec in specs.items()}
        if sorted(state["param_names"]) != sorted(shapes):
            raise KdslError(f"{path}: state.json names weights {state['param_names']}, the model has {list(shapes)}")
        data = sum(4 * math.prod(shape) + ARRAY_OVERHEAD for shape in shapes.values()) + ARRAY_OVERHEAD
        weights = _arrays(_member(archive, path, "weights.npz", data), path, "weights.npz", shapes)
        if set(weights) != set(shapes):
            raise KdslError(f"{path}: weights.npz lacks {sorted(set(shapes) - set(weights))}")
        # a slot's index counts the trainable weights in the saved order
        trainable = [shapes[n] for n in state["param_names"] if specs[n].trainable]
        slot_shapes = {f"{i}/{slot}": shape for i, shape in enumerate(trainable) for slot in SLOT_NAMES}
        slots = _arrays(_member(archive, path, "optimizer.npz", SLOTS_PER_WEIGHT * data), path, "optimizer.npz",
                        slot_shapes)  # fmt: skip
        carried_shapes = {c.name: c.type.dims for c in carried_states(graph)}
        carried = {}
        if "states.npz" in archive.namelist():
            limit = sum(4 * math.prod(shape) + ARRAY_OVERHEAD for shape in carried_shapes.values()) + ARRAY_OVERHEAD
            carried = _arrays(_member(archive, path, "states.npz", limit), path, "states.npz", carried_shapes)
    return Saved(graph, state, weights, slots, str(path), carried)


def _member(archive: zipfile.ZipFile, path: str | Path, name: str, limit: int) -> bytes:
    """A member of the archive, refused before it is read when it would unpack to more than `limit` bytes."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise KdslError(f"{path}: no `{name}` in the archive",
                        hint="a .kdz holds model.kd, state.json, weights.npz and optimizer.npz") from None  # fmt: skip
    if info.file_size > limit:
        raise KdslError(f"{path}: `{name}` would unpack to {info.file_size:,} bytes, more than its {limit:,} at most")
    return archive.read(name)


def _arrays(data: bytes, path: str | Path, member: str, shapes: Mapping[str, tuple]) -> dict[str, np.ndarray]:
    """The arrays of an .npz member, each named as `shapes` names it, of float type and of that shape (float32)."""
    arrays = {}
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        for key in npz.files:
            if key not in shapes:
                raise KdslError(f"{path}: {member} holds an array `{key}` the model has no place for")
            size = npz.zip.getinfo(f"{key}.npy").file_size
            if size > 4 * math.prod(shapes[key]) + ARRAY_OVERHEAD:
                raise KdslError(f"{path}: {member}'s `{key}` would unpack to {size:,} bytes")
            array = npz[key]
            if array.dtype.kind != "f" or array.shape != tuple(shapes[key]):
                raise KdslError(f"{path}: {member}'s `{key}` is {array.dtype}{list(array.shape)}, "
                                f"the model needs float32{list(shapes[key])}")  # fmt: skip
            arrays[key] = array.astype(np.float32)
    return arrays


def _check_state(path: str | Path, state: Any) -> None:
    """state.json's fields of the types `restore` reads them as."""

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise KdslError(f"{path}: state.json {what}")

    need(isinstance(state, dict) and state.get("format") == FORMAT, f"is not format {FORMAT}")
    need(isinstance(state.get("model"), str), "names no model")
    names = state.get("param_names")
    need(isinstance(names, list) and all(isinstance(n, str) for n in names) and len(set(names)) == len(names),
         "has no list of weight names")  # fmt: skip
    setup = state.get("compile")
    need(isinstance(setup, dict) and isinstance(setup.get("losses"), list) and isinstance(setup.get("metrics"), list)
         and isinstance(setup.get("optimizer"), dict) and setup.get("target") in ("numpy", "cpu", "cuda"),
         "has no compile settings")  # fmt: skip
    for loss in setup["losses"]:
        need(isinstance(loss, dict) and isinstance(loss.get("name"), str) and isinstance(loss.get("args"), dict)
             and _number(loss.get("weight")), "has a malformed loss")  # fmt: skip
    need(all(isinstance(m, list) and all(isinstance(x, str) for x in m) for m in setup["metrics"]), "has bad metrics")
    optimizer = state.get("optimizer")
    need(isinstance(optimizer, dict) and isinstance(optimizer.get("iterations"), int)
         and not isinstance(optimizer.get("iterations"), bool) and optimizer["iterations"] >= 0
         and _number(optimizer.get("learning_rate")), "has no optimizer step and learning rate")  # fmt: skip
    random = state.get("random")
    need(isinstance(random, dict) and all(isinstance(random.get(k), dict) for k in ("batches", "dropout")),
         "has no random state")  # fmt: skip


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def restore(model: Model, saved: Saved) -> None:
    """Compile `model` (built from `saved.graph`) as it was saved, and bring back its weights, optimizer state and
    random state, so training goes on where it stopped."""
    try:
        _restore(model, saved)
    except KdslError as error:
        raise KdslError(f"{saved.path}: {error.message}", hint=error.hint) from None
    except DAMAGE as error:
        raise KdslError(f"{saved.path}: its settings are damaged ({type(error).__name__}: {error})") from None


def _restore(model: Model, saved: Saved) -> None:
    state, weights, slots, graph, carried = saved.state, saved.weights, saved.slots, saved.graph, saved.carried
    setup = state["compile"]
    optimizer_config = dict(setup["optimizer"])
    if isinstance(optimizer_config["learning_rate"], dict):
        schedule = dict(optimizer_config["learning_rate"])
        optimizer_config["learning_rate"] = SCHEDULES[schedule.pop("name")](**schedule)
    optimizer = CLASSES[optimizer_config.pop("name")](**optimizer_config)
    model.compile(
        optimizer=optimizer,
        loss=[FnSpec(loss["name"], loss["args"]) for loss in setup["losses"]],
        loss_weights=[loss["weight"] for loss in setup["losses"]],
        metrics=dict(zip(graph.output_names, setup["metrics"])),
        target=setup["target"],
    )
    # by name: an archive written before weights came in Keras's order for functional models has another order
    trainer = model.trainer
    names = trainer.compiled.param_names
    model.set_weights([weights[name] for name in names])
    trainable = [names[i] for i in trainer.compiled.trainable]
    saved = state["optimizer"]
    optimizer.resume(saved["iterations"], saved["learning_rate"], [weights[n] for n in trainable])
    saved_order = [n for n in state["param_names"] if n in set(trainable)]  # the slots' order in the archive
    for key, value in slots.items():
        index, name = key.split("/", 1)
        if int(index) >= len(saved_order) or name not in optimizer.slot_names or not optimizer.slots:
            raise KdslError(f"the saved optimizer has a slot `{key}` that {optimizer.name} has no place for")
        slot = optimizer.slots[trainable.index(saved_order[int(index)])]
        if name not in slot:
            raise KdslError(f"the saved optimizer has a slot `{key}` that {optimizer.name} does not keep")
        slot[name] = value.copy()
    trainer.rng.bit_generator.state = state["random"]["batches"]
    trainer.compiled.rng.bit_generator.state = state["random"]["dropout"]
    for name, value in zip([c.name for c in model.state.carried], model.state.carried_values()):
        value[...] = carried.get(name, 0.0)
