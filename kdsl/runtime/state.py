"""A model's state apart from its compiled programs: its weights, which of them train, the random
generator its dropout masks are drawn from, and the states stateful RNNs carry from batch to batch.

The carried states are no weights (Keras keeps them out of a layer's weights): they follow the weights
in `host`, which the programs take whole, and `weights` and `names` leave them out.

The compiled programs take the weights as arguments; a backend that keeps copies of its own (on a
GPU) registers as the state's `mirror`, and is told when the host arrays may have been written.

A model nested in another shares its weights with it, as Keras's models share their layers' variables: the
outer state holds the inner state's very arrays (`share`). That is sound because nothing replaces a weight
array once made: optimizers, moving-statistics updates, `set_weights`, loading and the `weights` setter all
write into the arrays, and `compile()` keeps a model's state. Device copies are the one other place weights
live: reading the weights, or `sync()` before running on the host arrays, first pulls newer values from the
mirror of every state sharing arrays with this one, and that tells each mirror to upload again before its
next kernel.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from kdsl.ir.graph import Graph
from kdsl.ir.types import concrete
from kdsl.memory import BYTES_PER_NUMBER, require
from kdsl.passes.lower import Carried, Noise, carried_states
from kdsl.runtime.initializers import initial_weights


class Mirror(Protocol):
    """Copies of the weights kept elsewhere (on a device)."""

    def pull(self, host: list[np.ndarray]) -> None:
        """Bring newer values into the host arrays; after this the caller may write them."""

    def replaced(self) -> None:
        """The host arrays were replaced."""


CARRYING: weakref.WeakSet[ModelState] = weakref.WeakSet()  # the live states with carried states, for a layer to reset


@dataclass(eq=False)
class ModelState:
    names: list[str]  # "layer/weight", in Keras's `get_weights` order
    host: list[np.ndarray]  # the weights, then the carried states: every array the programs take after the data
    trainable: list[int]  # indices of the weights that train
    rng: np.random.Generator
    mirror: Mirror | None = field(default=None, repr=False)
    peers: list[ModelState] = field(default_factory=list, repr=False)  # states holding some of the same arrays
    carried: list[Carried] = field(default_factory=list, repr=False)  # what the arrays after the weights are

    @classmethod
    def initial(cls, graph: Graph, seed: int = 0) -> ModelState:
        """New weights for a typed graph, drawn by each layer's initializer from `seed`; dropout then draws from the
        same generator. Carried states start at zeros."""
        specs = [(f"{layer.name}/{p.name}", p) for layer in graph.layers() for p in layer.params or []]
        hint = "make the layers smaller"
        require(BYTES_PER_NUMBER * graph.param_count(), f"model `{graph.name}`'s weights", hint=hint)
        trainable = [i for i, (_, p) in enumerate(specs) if p.trainable]
        rng = np.random.default_rng(seed)
        carried = carried_states(graph)
        states = [np.zeros(state.type.dims, np.float32) for state in carried]
        state = cls([name for name, _ in specs], initial_weights(graph, rng) + states, trainable, rng, carried=carried)
        if carried:
            CARRYING.add(state)
        return state

    def share(self, inner: ModelState, prefix: str) -> None:
        """Hold `inner`'s arrays as the weights and carried states named `prefix/<inner's name>`: those of a nested
        model."""
        index = {name: i for i, name in enumerate([*self.names, *(state.name for state in self.carried)])}
        inner_names = [*inner.names, *(state.name for state in inner.carried)]
        for name, array in zip(inner_names, inner._pulled()):
            self.host[index[f"{prefix}/{name}"]] = array
        self.peers.append(inner)
        inner.peers.append(self)

    def _sharing(self) -> list[ModelState]:
        """This state and every state that holds some of its arrays, directly or through another."""
        found: list[ModelState] = []
        pending = [self]
        while pending:
            state = pending.pop()
            if all(state is not other for other in found):
                found.append(state)
                pending += state.peers
        return found

    @property
    def weights(self) -> list[np.ndarray]:
        """The weights' host arrays, up to date; the caller may write into them."""
        return self._pulled()[: len(self.names)]

    def _pulled(self) -> list[np.ndarray]:
        """Every host array (weights and carried states), up to date."""
        for state in self._sharing():
            if state.mirror is not None:
                state.mirror.pull(state.host)
        return self.host

    def carried_values(self, chosen: Callable[[Carried], bool] = lambda state: True) -> list[np.ndarray]:
        """The carried states `chosen` picks (all by default), up to date; writing into them changes the model."""
        values = self._pulled()[len(self.names) :]
        return [value for state, value in zip(self.carried, values, strict=True) if chosen(state)]

    def reset_carried(self, chosen: Callable[[Carried], bool] = lambda state: True) -> None:
        """The carried states `chosen` picks (all by default) back to zeros, as Keras's `reset_state`."""
        for value in self.carried_values(chosen):
            value[...] = 0.0

    @weights.setter
    def weights(self, value: Sequence[np.ndarray]) -> None:
        """Written into the arrays, which other states may share."""
        arrays = self.weights
        if len(value) != len(arrays):
            raise ValueError(f"expected {len(arrays)} weights, got {len(value)}")
        for array, new in zip(arrays, value):
            if np.shape(new) != array.shape:
                raise ValueError(f"expected a weight of shape {array.shape}, got {np.shape(new)}")
            array[...] = new

    def sync(self) -> None:
        """Before kernels run on the host arrays: bring in what the devices of states sharing them hold newer."""
        if self.peers:
            self.weights  # noqa: B018 - reading pulls the mirrors

    def detach(self) -> None:
        """Bring newer weights back from the device that mirrors them, and stop mirroring."""
        if self.mirror is not None:
            self.mirror.pull(self.host)
            self.mirror = None

    def dropout_masks(self, noise: Sequence[Noise], sizes: dict[str, int]) -> list[np.ndarray]:
        """One step's dropout keep-masks, in order: Bernoulli(1 - rate), scaled by 1 / (1 - rate)."""
        masks = []
        for n in noise:
            keep = self.rng.random(concrete(n.var.shape, sizes), dtype=np.float32) >= n.rate
            masks.append(keep.astype(np.float32) / np.float32(1.0 - n.rate))
        return masks
