"""What `model.layers` and `model.get_layer` give: each layer of a model, with its weights as the model holds
them (its `ModelState`), as Keras's layers carry theirs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from kdsl.catalogue.operations import Operation
from kdsl.errors import KdslArgumentError
from kdsl.ir.graph import Layer, Nested, Value
from kdsl.layers import set_trainable

if TYPE_CHECKING:
    from kdsl.model import Model


class InputLayer:
    """A model input, where Keras lists its InputLayer; it has no weights."""

    def __init__(self, value: Value):
        self.name, self.type = value.name, value.type

    def get_weights(self) -> list[np.ndarray]:
        return []

    def __repr__(self) -> str:
        return f"<InputLayer name={self.name}, built=True>"


class ModelLayer:
    """A layer of a model: `get_weights` / `set_weights` and each weight by name (`layer.kernel`), read from and
    written to the model's weights; `trainable`, which takes effect at the model's next `compile()`."""

    def __init__(self, model: Model, layer: Layer):
        self._model, self._layer = model, layer
        self.name = layer.name

    @property
    def _indices(self) -> list[int]:
        return [i for i, name in enumerate(self._model.state.names) if name.split("/", 1)[0] == self.name]

    def get_weights(self) -> list[np.ndarray]:
        weights = self._model.state.weights
        return [weights[i].copy() for i in self._indices]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        current = self._model.state.weights
        indices = self._indices
        if len(weights) != len(indices):
            raise KdslArgumentError(f"layer `{self.name}` has {len(indices)} weights, got {len(weights)} arrays")
        for i, new in zip(indices, weights):
            new = np.asarray(new, np.float32)
            if new.shape != current[i].shape:
                raise KdslArgumentError(f"`{self._model.state.names[i]}` has shape {current[i].shape}, got {new.shape}")
            current[i][...] = new

    @property
    def weights(self) -> list[np.ndarray]:
        """The layer's weights as the model holds them: writing into them changes the model."""
        weights = self._model.state.weights
        return [weights[i] for i in self._indices]

    def __getattr__(self, name: str) -> np.ndarray:
        """A weight by its Keras name: `layer.kernel`, `layer.bias`, `layer.recurrent_kernel`..."""
        state = self._model.state
        for i in self._indices:
            if state.names[i].rsplit("/", 1)[-1] == name:
                return state.weights[i]
        raise AttributeError(f"layer `{self.name}` has no attribute or weight `{name}`")

    @property
    def states(self) -> list[np.ndarray] | None:
        """A stateful RNN's carried states as the model holds them (writing into them changes the model); None for
        a layer that carries none, as in Keras."""
        return self._model.state.carried_values(self._own) or None

    def reset_state(self) -> None:
        """Zeros in a stateful RNN's carried states, as Keras's `reset_state`."""
        self._model.state.reset_carried(self._own)

    def reset_states(self) -> None:
        self.reset_state()

    def _own(self, carried) -> bool:
        return carried.layer is self._layer

    @property
    def trainable(self) -> bool:
        return self._layer.config["trainable"]

    @trainable.setter
    def trainable(self, value: bool) -> None:
        set_trainable(self._layer.config, value)

    def __repr__(self) -> str:
        return f"<{self._layer.kind.keras} name={self.name}, built=True>"


def model_layers(model: Model, inputs: bool) -> list[ModelLayer | InputLayer | Model]:
    """The model's layers in Keras's order, with its inputs where Keras lists their InputLayers when `inputs`; a
    nested model is there as itself. Operations (`x + y`, `ops.tanh`) are nodes of the graph but no layers, as in
    Keras."""
    graph = model.graph
    listed = graph.operations() if inputs else [op for op in graph.operations() if not isinstance(op, Value)]
    listed += [op for op in graph.top_layers() if all(op is not other for other in listed)]
    listed = [op for op in listed if not isinstance(getattr(op, "kind", None), Operation)]
    return [
        InputLayer(op) if isinstance(op, Value) else op.model if isinstance(op, Nested) else ModelLayer(model, op)
        for op in listed
    ]
