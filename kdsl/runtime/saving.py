"""One file holds a model: `.kdz`, a zip of its `.kd` source, weights, optimizer state and random state.

Loading it in a new process and training on gives the weights an uninterrupted run would
have: the optimizer's slots and step count, and the generators that shuffle batches and
draw dropout masks, are all restored. Files are written through a temporary file.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdsl.catalogue.args import FnSpec
from kdsl.errors import KdslError
from kdsl.files import npz_bytes, write_atomically
from kdsl.ir.graph import Graph
from kdsl.lang import load
from kdsl.lang.format import to_kd
from kdsl.runtime.optimizers import CLASSES
from kdsl.runtime.schedules import SCHEDULES

if TYPE_CHECKING:
    from kdsl.model import Model

FORMAT = 1
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")  # Keras's own files, which kdsl neither reads nor writes yet


def _not_keras(path: str | Path, what: str, ours: str) -> None:
    """Refuse a Keras file name rather than put kdsl's own format under it."""
    if str(path).lower().endswith(KERAS_SUFFIXES):
        raise KdslError(f"{path}: kdsl {what} its own format, not Keras's files", hint=f"use a name ending in {ours}")


def save_weights(model: Model, path: str | Path) -> None:
    """The weights alone, by Keras name, as `.npz`."""
    _not_keras(path, "writes weights in", "`.npz`")
    write_atomically(path, npz_bytes(dict(zip(model.state.names, model.state.weights))))


def load_weights(model: Model, path: str | Path) -> None:
    _not_keras(path, "reads weights in", "`.npz`")
    with np.load(path) as stored:
        missing = [n for n in model.state.names if n not in stored]
        if missing:
            raise KdslError(f"{path} has no weights for {', '.join(missing)}")
        model.set_weights([stored[n] for n in model.state.names])


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
    write_atomically(path, out.getvalue())


@dataclass
class Saved:
    """What a `.kdz` archive holds: the model's graph, its state, weights and optimizer slots."""

    graph: Graph
    state: dict
    weights: Mapping[str, np.ndarray]
    slots: Mapping[str, np.ndarray]


def read_saved(path: str | Path) -> Saved:
    """The contents of a model saved by `Model.save`."""
    _not_keras(path, "loads models from", "`.kdz`")
    with zipfile.ZipFile(path) as archive:
        state = json.loads(archive.read("state.json"))
        if state.get("format") != FORMAT:
            raise KdslError(f"{path}: unknown format {state.get('format')!r}")
        source = archive.read("model.kd").decode()
        weights = np.load(io.BytesIO(archive.read("weights.npz")))
        slots = np.load(io.BytesIO(archive.read("optimizer.npz")))
    return Saved(load(source, f"{path}:model.kd").models[state["model"]], state, weights, slots)


def restore(model: Model, saved: Saved) -> None:
    """Compile `model` (built from `saved.graph`) as it was saved, and bring back its weights, optimizer state and
    random state, so training goes on where it stopped."""
    state, weights, slots, graph = saved.state, saved.weights, saved.slots, saved.graph
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
    optimizer.iterations = state["optimizer"]["iterations"]
    optimizer.learning_rate = state["optimizer"]["learning_rate"]
    trainable = [names[i] for i in trainer.compiled.trainable]
    optimizer.slots = [optimizer.create_slots(weights[n]) for n in trainable] if optimizer.iterations else []
    saved_order = [n for n in state["param_names"] if n in set(trainable)]  # the slots' order in the archive
    for key, value in slots.items():
        index, name = key.split("/", 1)
        optimizer.slots[trainable.index(saved_order[int(index)])][name] = value.copy()
    trainer.rng.bit_generator.state = state["random"]["batches"]
    trainer.compiled.rng.bit_generator.state = state["random"]["dropout"]
