"""A model's optimizer state as Keras 3 saves its optimizer's variables (`optimizer/vars` of the weights
file), so that Keras goes on training a model kdsl trained with the same step count and slots, and kdsl one
that Keras trained.

Keras's optimizer holds its step count, its learning rate, then its slots: for each kind of slot (or pair, for
Adam's momentum and velocity, which alternate), one per trainable weight in the model's weight order.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kdsl.errors import KdslError
from kdsl.ir.graph import Graph
from kdsl.runtime import optimizers

if TYPE_CHECKING:
    from kdsl.model import Model

# kdsl's slots in Keras's order: each tuple is one `add_optimizer_variables` call, its slots alternating per weight
KERAS_SLOT_ORDER = {
    "sgd": (("momentum",),),
    "adam": (("m", "v"), ("v_hat",)),
    "rmsprop": (("velocity",), ("momentum",), ("average_gradient",)),
    "adagrad": (("accumulator",),),
}


def optimizer_variables(model: Model, graph: Graph) -> tuple[str, list[np.ndarray]] | None:
    """The optimizer's name and its variables in Keras's order: the compiled model's optimizer, or a new one of the
    graph's train block (what Keras builds when it loads the compile settings). None without either, or when the
    learning rate follows a schedule, which Keras keeps outside its variables."""
    trainer = getattr(model, "_trainer", None)
    state = model.state
    if trainer is not None:
        optimizer, names = trainer.optimizer, trainer.compiled.param_names
        trainable = [names[i] for i in trainer.compiled.trainable]  # the order of the optimizer's slots
    elif graph.train is not None:
        optimizer, trainable = optimizers.get(graph.train.optimizer), [state.names[i] for i in state.trainable]
    else:
        return None
    if optimizer.schedule is not None:
        return None
    weights = dict(zip(state.names, state.weights))
    slots = optimizer.slots or [optimizer.create_slots(weights[name]) for name in trainable]  # before the first step
    variables = [np.asarray(optimizer.iterations, np.int64), np.asarray(optimizer.learning_rate, np.float32)]
    return optimizer.name, variables + _in_keras_order(optimizer.name, dict(zip(trainable, slots)), state.names)


def _in_keras_order(optimizer: str, slots: dict[str, dict[str, np.ndarray]], names: list[str]) -> list[np.ndarray]:
    """The slot arrays (`slots` by trainable weight) in the order of Keras's optimizer variables: by slot group, then
    by weight in the model's order (`names`, Keras's trainable_variables order)."""
    ordered = [name for name in names if name in slots]
    return [slots[name][slot] for group in KERAS_SLOT_ORDER[optimizer] for name in ordered
            for slot in group if slot in slots[name]]  # fmt: skip


def restore_optimizer_variables(model: Model, variables: list[np.ndarray], source: str) -> None:
    """Give the compiled `model`'s optimizer the step count, learning rate and slots of Keras's `variables` (as
    `optimizer_variables` lays them out; only the first two where Keras had not stepped yet), so that training
    goes on where Keras stopped."""
    trainer = model.trainer
    optimizer, names = trainer.optimizer, trainer.compiled.param_names
    trainable = [names[i] for i in trainer.compiled.trainable]
    state = model.state
    weights = dict(zip(state.names, state.weights))
    slots = [optimizer.create_slots(weights[name]) for name in trainable]
    places = _in_keras_order(optimizer.name, dict(zip(trainable, slots)), state.names)
    if len(variables) == 2:  # built but never stepped: no slots yet
        places = []
    elif len(variables) != 2 + len(places):
        raise KdslError(f"{source}: its optimizer saved {len(variables)} variables, where {optimizer.name} as "
                        f"compiled keeps {2 + len(places)} for this model", hint="load it with compile=False, "
                        "then compile it with the optimizer it was trained with")  # fmt: skip
    for index, (place, value) in enumerate(zip(places, variables[2:]), 2):
        if value.shape != place.shape:
            raise KdslError(f"{source}: optimizer variable {index} is {list(value.shape)}, the slot it fills "
                            f"{list(place.shape)}")  # fmt: skip
        place[...] = value
    optimizer.iterations = int(variables[0])
    optimizer.learning_rate = float(variables[1])
    optimizer.slots = slots if places else []
    trainer.compiled.sync_optimizer(optimizer)
