"""Optimizers with Keras 3's update rules and defaults: SGD (momentum, Nesterov), Adam, RMSprop, Adagrad.

Each updates float32 weights in place from the gradients a compiled training step leaves.
Gradient clipping (`clipnorm`, `clipvalue`, `global_clipnorm`) is applied first, as Keras does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from kdsl.catalogue.args import FnSpec
from kdsl.catalogue.functions import OPTIMIZERS
from kdsl.runtime import schedules
from kdsl.runtime.schedules import LearningRateSchedule

__all__ = ["CLASSES", "SGD", "Adagrad", "Adam", "Optimizer", "RMSprop", "get", "schedules"]

CLIPPING = ("clipnorm", "clipvalue", "global_clipnorm")


class Optimizer:
    """Keras-style: `Optimizer(learning_rate=...)`, then `apply(weights, grads)` once per step."""

    name = "optimizer"

    def __init__(self, learning_rate, hyper: dict, options: dict):
        """`learning_rate` is a number or a schedule (`kdsl.optimizers.schedules`) of the step count; `hyper` holds
        the optimizer's own arguments, `options` the other keyword arguments it was given: Keras's clipping and
        `name`; any other is refused, as Keras refuses it (`lr`), or as kdsl has not got it (`weight_decay`)."""
        options.pop("name", None)  # Keras's display name: it changes no number
        self.schedule = learning_rate if isinstance(learning_rate, LearningRateSchedule) else None
        given = {**hyper, **options} | ({} if self.schedule else {"learning_rate": learning_rate})
        args = dict(OPTIMIZERS.checked(FnSpec(self.name, given)).args)
        self.learning_rate = float(learning_rate(0) if self.schedule else args.pop("learning_rate"))
        args.pop("learning_rate", None)
        self.clipnorm, self.clipvalue, self.global_clipnorm = (args.pop(k) for k in CLIPPING)
        self.hyper = args
        self.iterations = 0
        self.slots: list[dict[str, np.ndarray]] = []

    def apply(self, weights: Sequence[np.ndarray], grads: Sequence[np.ndarray]) -> None:
        if not weights:
            return
        if not self.slots:
            self.slots = [self.create_slots(w) for w in weights]
        grads = self.clip(grads)
        if self.schedule is not None:
            self.learning_rate = float(self.schedule(self.iterations))
        self.iterations += 1
        # every weight in one compiled call, each array as a flat view: a call per weight cost more
        # than the update of a small model (W2: six weights, 266,610 parameters)
        slots = [tuple(s.get(name, w).reshape(-1) for s, w in zip(self.slots, weights)) for name in self.slot_names]
        flat_weights, flat_grads = (tuple(a.reshape(-1) for a in arrays) for arrays in (weights, grads))
        from kdsl.runtime.update_loops import HOST_LOOPS  # Numba, imported when a model first trains

        HOST_LOOPS[self.name](flat_weights, flat_grads, *slots, *self.scalars(np.float32(self.learning_rate)))

    def warm_up(self, weights: Sequence[np.ndarray]) -> None:
        """Compile the update of weights shaped as these (Numba specializes it by their number), by a step on
        zeros of a copy of this optimizer: this one and the weights stay as they are."""
        spare = copy.copy(self)
        spare.slots = []
        spare.apply([np.zeros_like(w) for w in weights], [np.zeros_like(w) for w in weights])

    def clip(self, grads: Sequence[np.ndarray]) -> Sequence[np.ndarray]:
        if self.clipvalue is not None:
            grads = [np.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
        if self.clipnorm is not None:
            grads = [g * min(1.0, self.clipnorm / max(float(np.linalg.norm(g)), 1e-12)) for g in grads]
        if self.global_clipnorm is not None:
            total = float(np.sqrt(sum(float(np.sum(np.square(g))) for g in grads)))
            grads = [g * min(1.0, self.global_clipnorm / max(total, 1e-12)) for g in grads]
        return grads

    def create_slots(self, weight: np.ndarray) -> dict[str, np.ndarray]:
        return {}

    def resume(self, iterations: int, learning_rate: float, weights: Sequence[np.ndarray]) -> None:
        """Go on from a saved state: its step count and learning rate, and new slots for `weights` (the trainable
        ones, in the order of their updates) for the caller to fill; none before a first step."""
        self.iterations, self.learning_rate = int(iterations), float(learning_rate)
        self.slots = [self.create_slots(w) for w in weights] if self.iterations else []

    def slots_per_weight(self) -> int:
        """How many arrays the size of a weight this optimizer keeps for each weight (its memory, beside them)."""
        return len(self.create_slots(np.zeros(1, np.float32)))

    # the rule of `kdsl.runtime.update_rules` (by this optimizer's name) takes the weight, its gradient,
    # then these slots (a slot the optimizer does not keep stands as the weight: never read), then `scalars`
    slot_names: tuple[str, ...] = ()

    def scalars(self, lr: np.float32) -> tuple:
        """The rule's float32 hyperparameters and flags after the slots, for this step's learning rate."""
        raise NotImplementedError

    def config(self) -> dict:
        """Name and arguments: `CLASSES[name](**rest)` makes the same optimizer again."""
        clipping = {"clipnorm": self.clipnorm, "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm}
        rate = self.schedule.config() if self.schedule else self.learning_rate
        return {"name": self.name, "learning_rate": rate, **self.hyper, **clipping}


class SGD(Optimizer):
    name = "sgd"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False, **options):
        super().__init__(learning_rate, {"momentum": momentum, "nesterov": nesterov}, options)

    def create_slots(self, weight):
        return {"momentum": np.zeros_like(weight)} if self.hyper["momentum"] else {}

    slot_names = ("momentum",)

    def scalars(self, lr):
        return lr, np.float32(self.hyper["momentum"]), np.bool_(self.hyper["nesterov"])


class Adam(Optimizer):
    name = "adam"

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **options):
        hyper = {"beta_1": beta_1, "beta_2": beta_2, "epsilon": epsilon, "amsgrad": amsgrad}
        super().__init__(learning_rate, hyper, options)

    def create_slots(self, weight):
        slots = {"m": np.zeros_like(weight), "v": np.zeros_like(weight)}
        if self.hyper["amsgrad"]:
            slots["v_hat"] = np.zeros_like(weight)
        return slots

    slot_names = ("m", "v", "v_hat")

    def scalars(self, lr):
        b1, b2, t = self.hyper["beta_1"], self.hyper["beta_2"], self.iterations
        alpha = np.float32(lr * np.sqrt(1 - b2**t) / (1 - b1**t))  # the learning rate with step t's bias corrections
        epsilon, amsgrad = np.float32(self.hyper["epsilon"]), np.bool_(self.hyper["amsgrad"])
        return alpha, np.float32(1 - b1), np.float32(1 - b2), epsilon, amsgrad


class RMSprop(Optimizer):
    name = "rmsprop"

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **options):
        hyper = {"rho": rho, "momentum": momentum, "epsilon": epsilon, "centered": centered}
        super().__init__(learning_rate, hyper, options)

    def create_slots(self, weight):
        slots = {"velocity": np.zeros_like(weight)}
        if self.hyper["momentum"]:
            slots["momentum"] = np.zeros_like(weight)
        if self.hyper["centered"]:
            slots["average_gradient"] = np.zeros_like(weight)
        return slots

    slot_names = ("velocity", "momentum", "average_gradient")

    def scalars(self, lr):
        rho, epsilon, momentum = (np.float32(self.hyper[k]) for k in ("rho", "epsilon", "momentum"))
        return lr, rho, np.float32(1) - rho, epsilon, momentum, np.bool_(self.hyper["centered"])


class Adagrad(Optimizer):
    name = "adagrad"

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, **options):
        super().__init__(learning_rate, {"initial_accumulator_value": initial_accumulator_value, "epsilon": epsilon},
                         options)  # fmt: skip

    def create_slots(self, weight):
        return {"accumulator": np.full_like(weight, self.hyper["initial_accumulator_value"])}

    slot_names = ("accumulator",)

    def scalars(self, lr):
        return lr, np.float32(self.hyper["epsilon"])


CLASSES = {cls.name: cls for cls in (SGD, Adam, RMSprop, Adagrad)}
SLOT_NAMES = sorted({name for cls in CLASSES.values() for name in cls.slot_names})  # every slot any optimizer keeps


def get(spec: Optimizer | FnSpec | str) -> Optimizer:
    """An optimizer from an object, a name with Keras defaults (`'adam'`), or a bound `.kd` spec."""
    if isinstance(spec, Optimizer):
        return spec
    spec = OPTIMIZERS.checked(spec)
    return CLASSES[spec.name](**spec.args)
