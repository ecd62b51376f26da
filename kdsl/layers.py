"""Keras-style layers for building models in Python; they produce the same IR as `.kd` files.

    x = kdsl.Input(shape=(28, 28))
    h = kdsl.layers.LSTM(64)(x)
    probs = kdsl.layers.Dense(10, activation="softmax")(h)
    model = kdsl.Model(x, probs)

Each class takes the arguments of its Keras namesake, checked by the same catalogue as
`.kd` files; shapes are inferred at every call, so mistakes surface where they are made.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdsl.catalogue import LAYERS
from kdsl.catalogue.args import ArgError, Given
from kdsl.catalogue.base import LayerKind
from kdsl.catalogue.cells import StepCell
from kdsl.catalogue.operations import OPERATIONS, Operation, is_number
from kdsl.catalogue.recurrent import Recurrent
from kdsl.catalogue.stacked import StackedRNN
from kdsl.errors import KdslArgumentError, KdslUnsupportedError
from kdsl.functional import graph_from_calls
from kdsl.ir.graph import Layer as IRLayer
from kdsl.ir.graph import LayerSpec, Node, Value, infer_node
from kdsl.ir.types import BATCH, DTYPE_ALIASES, TensorType
from kdsl.naming import is_valid_name, model_name, snake_case
from kdsl.runtime.state import CARRYING, ModelState

if TYPE_CHECKING:
    import numpy as np

    from kdsl.passes.lower import Carried


@dataclass(eq=False)
class KerasTensor:
    """A symbolic tensor: the type of a model input or of a layer call's output, and where it came from."""

    type: TensorType
    masked: bool = False
    call: LayerCall | None = None  # None for a model input
    index: int = 0
    name: str | None = None

    @property
    def shape(self) -> tuple[int | str | None, ...]:
        """Keras's view of the shape: None for the batch dimension."""
        return tuple(None if d == BATCH else d for d in self.type.dims)

    @property
    def dtype(self) -> str:
        return "float32" if self.type.dtype == "f32" else "int32"

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape} dtype={self.dtype}>"

    # Arithmetic adds operations to the model (`kdsl.ops`), as Keras's KerasTensor operators do.
    def __add__(self, other: Any) -> KerasTensor:
        return operate("add", self, other)

    def __radd__(self, other: Any) -> KerasTensor:
        return operate("add", other, self)

    def __sub__(self, other: Any) -> KerasTensor:
        return operate("subtract", self, other)

    def __rsub__(self, other: Any) -> KerasTensor:
        return operate("subtract", other, self)

    def __mul__(self, other: Any) -> KerasTensor:
        return operate("multiply", self, other)

    def __rmul__(self, other: Any) -> KerasTensor:
        return operate("multiply", other, self)

    def __truediv__(self, other: Any) -> KerasTensor:
        return operate("true_divide", self, other)

    def __rtruediv__(self, other: Any) -> KerasTensor:
        return operate("true_divide", other, self)

    def __neg__(self) -> KerasTensor:
        return operate("negative", self)


_call_counter = itertools.count()


@dataclass(eq=False)
class LayerCall:
    """One call of a layer. Calls are numbered as they happen: that order is a topological order."""

    layer: Layer
    inputs: list[KerasTensor]
    outputs: list[KerasTensor] = field(default_factory=list)
    order: int = field(default_factory=lambda: next(_call_counter))


def Input(
    shape: Sequence[int | str | None] | None = None,
    dtype: str = "float32",
    name: str | None = None,
    batch_size: int | None = None,
    batch_shape: Sequence[int | str | None] | None = None,
) -> KerasTensor:
    """A model input of the given per-sample shape; None (or a name) marks a variable dimension. As in Keras,
    `batch_size` (or the first entry of `batch_shape`, the shape with the batch) fixes the batch size, which
    stateful RNNs need; every batch given to the model then has that many samples."""
    if batch_shape is not None:
        if shape is not None or batch_size is not None:
            raise KdslArgumentError("`Input` takes `batch_shape`, or `shape` with an optional `batch_size`, not both")
        if not isinstance(batch_shape, Sequence) or not batch_shape:
            raise KdslArgumentError(f"`Input` batch_shape must be a shape with the batch first, got {batch_shape!r}")
        batch_size, shape = batch_shape[0], batch_shape[1:]
    if shape is None:
        raise KdslArgumentError("`Input` needs a `shape` (or a `batch_shape`)")
    if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1):
        raise KdslArgumentError(f"`Input` batch_size must be a positive number or None, got {batch_size!r}")
    if dtype not in DTYPE_ALIASES:
        raise KdslArgumentError(f"`Input` dtype must be float32 or int32, got {dtype!r}")
    if name is not None and not is_valid_name(name):
        raise KdslArgumentError(f"`Input` name must be a name like 'pixels', got {name!r}")
    dims: list[int | str] = [BATCH if batch_size is None else batch_size]
    for position, dim in enumerate(tuple(shape), start=1):
        if dim is None:
            dims.append(f"d{position}")
        elif (isinstance(dim, str) and dim.isascii() and dim.isidentifier() and dim != BATCH) or (
            isinstance(dim, int) and not isinstance(dim, bool) and dim > 0
        ):
            dims.append(dim)
        else:
            raise KdslArgumentError(f"`Input` shape entries are positive numbers or None, got {dim!r}")
    return KerasTensor(TensorType(DTYPE_ALIASES[dtype], tuple(dims)), name=name)


def set_trainable(config: dict[str, Any], value: bool) -> None:
    """Freeze or unfreeze a layer's configuration and, as Keras's setter does, that of the layers it holds (a
    wrapper's layer, an RNN's cells)."""
    config["trainable"] = bool(value)
    inner = config.get("layer")
    if isinstance(inner, LayerSpec):
        inner_config = dict(inner.config)
        set_trainable(inner_config, value)
        config["layer"] = LayerSpec(inner.kind, inner_config)
    if "cells" in config:
        config["cells"] = tuple(
            LayerSpec(cell.kind, {**cell.config, "trainable": bool(value)}) for cell in config["cells"]
        )


class Layer:
    """A configured layer; call it on KerasTensors. Calling one instance again shares its weights."""

    kind: LayerKind
    default_name: str | None = None  # what an unnamed layer is called, numbered, if not its kind's name

    def __init__(self, *args: Any, name: str | None = None, **kwargs: Any):
        """Keras's arguments; `input_shape` (or `input_dim`, a shape of one axis), as Keras takes it, gives a
        Sequential model that starts with this layer its input."""
        if name is not None and not is_valid_name(name):
            raise KdslArgumentError(f"a layer name must be a name like 'encoder', got {name!r}")
        if not hasattr(self, "kind"):
            self._init_own(name, args, kwargs)
            return
        input_dim = kwargs.pop("input_dim", None)
        self.input_shape = (input_dim,) if input_dim is not None else kwargs.pop("input_shape", None)
        given = [Given(value) for value in args] + [Given(value, None, key) for key, value in kwargs.items()]
        self.config = self.kind.bind(given)
        self.name = name
        self._ir = IRLayer(name or self.kind.name, self.kind, self.config)

    def _init_own(self, name: str | None, args: tuple, kwargs: dict[str, Any]) -> None:
        """A layer of the user's own: a subclass with `call`, made of kdsl layers and `kdsl.ops`, as Keras's base
        `Layer(**kwargs)` takes it; it runs as a cell of `RNN`."""
        trainable, dtype = kwargs.pop("trainable", True), kwargs.pop("dtype", None)
        if dtype not in (None, "float32"):
            raise KdslUnsupportedError(
                f"layer `{type(self).__name__}`: dtype {dtype!r}", hint="kdsl computes in float32"
            )
        if args or kwargs:
            raise KdslArgumentError(
                f"`Layer.__init__` of `{type(self).__name__}` takes name, trainable and dtype, got "
                + ", ".join([*(repr(a) for a in args), *kwargs]),
                hint="keep your layer's own arguments for its own __init__",
            )
        self.name = name or model_name(snake_case(type(self).__name__))
        self.input_shape, self.built = None, False
        self.config = {"trainable": bool(trainable)}

    def build(self, input_shape: tuple) -> None:
        """A layer of the user's own makes its layers here or in `__init__`."""

    def add_weight(
        self,
        shape: Sequence[int] | None = None,
        initializer: Any = None,
        dtype: Any = None,
        trainable: bool = True,
        regularizer: Any = None,
        constraint: Any = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> KerasTensor:
        """A weight the cell holds itself, as Keras's `add_weight`: a tensor (with no batch axis) that `call` reads
        through `kdsl.ops` (`ops.matmul(inputs, self.kernel)`, `self.peephole * c`)."""
        refused = list(kwargs)
        if dtype not in (None, "float32"):
            refused.append("dtype")
        if not trainable:
            refused.append("trainable")
        if refused:
            raise KdslUnsupportedError(
                f"`add_weight` with {', '.join(refused)}",
                hint="a cell's own weights are trainable float32 weights; constants are numbers in `call`",
            )
        if shape is None:
            raise KdslArgumentError("`add_weight` needs a `shape`")
        settings = {"initializer": initializer or "glorot_uniform", "regularizer": regularizer}
        if constraint is not None:
            settings["constraint"] = constraint
        return CellWeight(list(shape), name=name, **settings)([])

    @property
    def trainable(self) -> bool:
        return self.config["trainable"]

    @trainable.setter
    def trainable(self, value: bool) -> None:
        """Freeze or unfreeze the layer. As in Keras, it takes effect at the model's next `compile()`."""
        set_trainable(self.config, value)  # the IR layer's configuration too: the same dict

    def as_layer_spec(self) -> LayerSpec:
        if self.name is not None:
            raise ArgError("a layer inside a wrapper takes no `name`", hint="name the wrapper instead")
        return LayerSpec(self.kind, self.config)

    def __call__(
        self, inputs: KerasTensor | Sequence[KerasTensor], initial_state: Sequence[KerasTensor] | None = None
    ) -> KerasTensor | list[KerasTensor]:
        if not hasattr(self, "kind"):
            raise KdslUnsupportedError(
                f"calling `{type(self).__name__}`, a layer of your own, on tensors",
                hint="layers of your own run as cells: `kdsl.layers.RNN(cell)`; elsewhere call kdsl layers and ops",
            )
        tensors = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
        if initial_state is not None:
            if not isinstance(self.kind, Recurrent):
                raise KdslArgumentError(f"`{self.kind.keras}` takes no `initial_state`")
            tensors += list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        for tensor in tensors:
            if not isinstance(tensor, KerasTensor):
                raise KdslArgumentError(
                    f"`{self.kind.keras}` is called on {type(tensor).__name__}, not on a tensor of the model",
                    hint="start from kdsl.Input(shape=...) and call layers on what they return",
                )
        node = Node(self._ir, [Value("x", t.type, t.masked) for t in tensors], [])
        node.outputs = [Value("y") for _ in range(self.kind.num_outputs(self.config))]
        infer_node(node)
        call = LayerCall(self, tensors)
        call.outputs = [KerasTensor(v.type, v.masked, call, i) for i, v in enumerate(node.outputs)]
        return call.outputs[0] if len(call.outputs) == 1 else _group_states(self.kind, self.config, call.outputs)

    def __repr__(self) -> str:
        return f"<{self.kind.keras} name={self.name or '(auto)'}>"


class OperationLayer(Layer):
    """The node one `keras.ops` function call adds to the model: an operation with no weights."""

    def __init__(self, kind: Operation, config: dict[str, Any]):
        self.kind, self.config, self.name, self.input_shape = kind, config, None, None
        self.default_name = kind.default_name
        self._ir = IRLayer(kind.default_name, kind, config)


def operate(function: str, *operands: Any, **settings: Any) -> KerasTensor:
    """The `keras.ops` function `function` on tensors of the model and numbers (broadcast as scalars)."""
    kind = OPERATIONS[function]
    for x in operands:
        if not isinstance(x, KerasTensor) and not is_number(x):
            raise KdslArgumentError(
                f"`ops.{kind.function}` takes tensors of the model and numbers, got {type(x).__name__}",
                hint="start from kdsl.Input(shape=...) and call layers and ops on what they return",
            )
    return OperationLayer(kind, kind.config(operands, **settings))([x for x in operands if isinstance(x, KerasTensor)])


class Dense(Layer):
    """Densely connected layer: `activation(x @ kernel + bias)` on the last axis."""

    kind = LAYERS["dense"]


class Activation(Layer):
    """Applies an activation function element-wise."""

    kind = LAYERS["activation"]


class Flatten(Layer):
    """Flattens every dimension but the batch."""

    kind = LAYERS["flatten"]


class Reshape(Layer):
    """Reshapes each sample to `target_shape` (one entry may be -1)."""

    kind = LAYERS["reshape"]


class Dropout(Layer):
    """Zeroes a `rate` fraction of its inputs while training, scaling the rest by 1 / (1 - rate)."""

    kind = LAYERS["dropout"]


class BatchNormalization(Layer):
    """Normalizes along `axis` with batch statistics while training and moving averages otherwise."""

    kind = LAYERS["batch_normalization"]


class Embedding(Layer):
    """Maps integer ids to dense vectors; `mask_zero=True` masks id 0 for the layers after it."""

    kind = LAYERS["embedding"]


class Recurring(Layer):
    """A layer that may be stateful: its states live in each model that holds it (see `ModelState`)."""

    def _holders(self) -> list[ModelState]:
        """The states of the live models holding this layer."""
        return [state for state in list(CARRYING) if any(self._own(c) for c in state.carried)]

    def _own(self, carried: Carried) -> bool:
        return carried.layer.config is self.config

    @property
    def states(self) -> list[np.ndarray] | None:
        """The states a stateful layer carries into the next batch (writing into them changes the model); None
        before a model holds it, or when it is not stateful, as Keras's."""
        found = [state.carried_values(self._own) for state in self._holders()]
        if any(any(a is not b for a, b in zip(values, found[0])) for values in found[1:]):  # nesting shares them
            raise KdslArgumentError(
                "this stateful layer is in several models, each with its own states",
                hint="read them from one: model.get_layer(name).states",
            )
        return found[0] if found else None

    def reset_state(self) -> None:
        """Zeros in the layer's carried states, in every model holding it, as Keras's `reset_state`."""
        for state in self._holders():
            state.reset_carried(self._own)

    def reset_states(self) -> None:
        """Keras's older name of `reset_state`."""
        self.reset_state()


class SimpleRNN(Recurring):
    """Fully connected recurrent layer: `h = activation(x @ kernel + h @ recurrent_kernel + bias)`."""

    kind = LAYERS["simple_rnn"]


class LSTM(Recurring):
    """Long short-term memory, gates in Keras order i, f, c, o."""

    kind = LAYERS["lstm"]


class GRU(Recurring):
    """Gated recurrent unit, gates in Keras order z, r, h; `reset_after=True` by default, as in Keras."""

    kind = LAYERS["gru"]


def _group_states(kind: LayerKind, config: dict[str, Any], outputs: list[KerasTensor]) -> list[Any]:
    """Outputs as Keras returns them: an RNN over several cells gives each cell's states as one list,
    `[output, [h1, c1], [h2, c2]]`, and Bidirectional such an RNN's forward states, then its backward ones."""
    inner = config.get("layer")
    rnn, rnn_config = (inner.kind, inner.config) if isinstance(inner, LayerSpec) else (kind, config)
    if not isinstance(rnn, StackedRNN) or not rnn_config["return_state"]:
        return outputs
    counts = rnn.state_counts(rnn_config)
    directions = 2 if rnn is not kind else 1
    grouped, rest = [], list(outputs[: len(outputs) - directions * sum(counts)])
    states = outputs[len(rest) :]
    for count in counts * directions:
        grouped.append(states[:count])
        states = states[count:]
    return rest + grouped


class Cell:
    """A recurrent cell for `RNN(cell)`, with the arguments of its layer that belong to the cell."""

    layer: type[Layer]

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs

    def as_layer_spec(self) -> LayerSpec:
        """The cell as its layer's configuration: a cell of `RNN([cell, cell])`."""
        return LayerSpec(self.layer.kind, self.layer(*self.args, **self.kwargs).config)


class SimpleRNNCell(Cell):
    layer = SimpleRNN


class LSTMCell(Cell):
    layer = LSTM


class GRUCell(Cell):
    layer = GRU


class StackedRNNCells:
    """Keras's stack of cells, for `RNN(StackedRNNCells([...]))`; `RNN([...])` is the same."""

    def __init__(self, cells: Sequence[Cell], **kwargs: Any):
        if kwargs:
            raise KdslArgumentError("StackedRNNCells takes only its cells; give the other arguments to RNN")
        self.cells = list(cells)


class RNN(Recurring):
    """Keras's generic recurrent layer. Around one built-in cell, `RNN(LSTMCell(64))` is `LSTM(64)`, with the same
    weights and numbers, compiled to the same fused time loop (Keras's own runs the cell step by step). Around a
    list of cells (or `StackedRNNCells`) it is the `stacked_rnn` layer, whose cells run one after another."""

    default_name = "rnn"
    _own_cell: Layer | None = None  # a cell of the user's own, traced at the first call

    def __init__(
        self, cell: Cell | Sequence[Cell] | StackedRNNCells, *args: Any, name: str | None = None, **kwargs: Any
    ):
        cells = cell.cells if isinstance(cell, StackedRNNCells) else cell
        if isinstance(cells, list | tuple) and len(cells) == 1:  # Keras's stack of one cell is that cell
            cells = cells[0]
        if args:
            raise KdslArgumentError("RNN's arguments after the cell are given by name, as return_sequences=True")
        if isinstance(cells, list | tuple):
            self.kind = LAYERS["stacked_rnn"]
            super().__init__(cells, name=name, **kwargs)
            return
        if isinstance(cells, Layer) and not hasattr(cells, "kind"):  # a cell of the user's own
            self.kind, self.name, self.input_shape = LAYERS["rnn"], name, None
            self._own_cell, self._arguments, self._ir = cells, kwargs, None
            self.config = {"trainable": kwargs.pop("trainable", True)}
            return
        if not isinstance(cells, Cell):
            raise KdslArgumentError(
                f"RNN takes a cell: SimpleRNNCell, LSTMCell, GRUCell, a layer of your own with `state_size` and "
                f"`call(inputs, states)`, or a list of cells; got {type(cells).__name__}"
            )
        self.kind = cells.layer.kind
        super().__init__(*cells.args, name=name, **cells.kwargs, **kwargs)

    def as_layer_spec(self) -> LayerSpec:
        if self._own_cell is not None:
            raise KdslUnsupportedError(
                f"a wrapper around RNN over `{self._own_cell.name}`, a cell of your own",
                hint="write the cell in a `.kd` file (`cell ... { }`), where `bidirectional(rnn(...))` takes it",
            )
        return super().as_layer_spec()

    def _trace(self, inputs: KerasTensor | Sequence[KerasTensor]) -> None:
        """Bind the layer to its own cell traced for the input's features, at the first call."""
        x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        features = x.type.dims[-1] if isinstance(x, KerasTensor) and x.type.rank == 3 else None
        if not isinstance(features, int):
            raise KdslArgumentError(
                f"RNN over `{self._own_cell.name}` is called on {x!r}",
                hint="call it on a (batch, timesteps, features) tensor with a fixed number of features",
            )
        cell = traced_cell(self._own_cell, features)
        given = [Given(cell), *(Given(value, None, key) for key, value in self._arguments.items())]
        self.config = {**self.kind.bind(given), "trainable": self.config["trainable"]}
        self._ir = IRLayer(self.name or self.kind.name, self.kind, self.config)

    def __call__(
        self, inputs: KerasTensor | Sequence[KerasTensor], initial_state: Sequence[Any] | None = None
    ) -> KerasTensor | list[Any]:
        """Over several cells, `initial_state` gives each cell's states in Keras's form: `[[h1, c1], [h2]]`."""
        if self._own_cell is not None and self._ir is None:
            self._trace(inputs)
        if initial_state is None or not isinstance(self.kind, StackedRNN):
            return super().__call__(inputs, initial_state)
        counts = self.kind.state_counts(self.config)
        entries = list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        flat = []
        for entry, count in zip(entries, counts):
            states = list(entry) if isinstance(entry, (list, tuple)) else [entry]
            if len(states) != count:
                break
            flat += states
        if len(entries) != len(counts) or len(flat) != sum(counts):
            raise KdslArgumentError(
                f"RNN over {len(counts)} cells takes one `initial_state` entry per cell, each with that cell's "
                f"states ({', '.join(str(c) for c in counts)}), got {len(entries)} entries",
                hint="e.g. initial_state=[[h1, c1], [h2, c2]] for two LSTM cells",
            )
        return super().__call__(inputs, flat)


class CellWeight(Layer):
    """The node that gives a cell's own weight its value (made by `Layer.add_weight`)."""

    kind = LAYERS["weight"]


def traced_cell(cell: Layer, features: int) -> StepCell:
    """One step of a cell written in Python as Keras's are (`state_size`, `call(inputs, states)` returning the
    output and the new states), as a graph: `call` run once on symbolic tensors, never at each step."""
    if hasattr(cell, "get_initial_state"):
        raise KdslUnsupportedError(
            f"cell `{cell.name}`: initial states from its own `get_initial_state`",
            hint="leave it out (states start at zeros) and pass other initial states as `initial_state=[...]`",
        )
    sizes = list(cell.state_size) if isinstance(cell.state_size, list | tuple) else [cell.state_size]
    if not sizes or not all(isinstance(size, int) and size > 0 for size in sizes):
        raise KdslArgumentError(
            f"cell `{cell.name}`: `state_size` is {cell.state_size!r}",
            hint="give the units of each state: `self.state_size = units`, or a list for several states",
        )
    step = KerasTensor(TensorType("f32", (BATCH, features)), name="inputs")
    states = [KerasTensor(TensorType("f32", (BATCH, size)), name=f"state_{i}") for i, size in enumerate(sizes)]
    if not cell.built:
        cell.build((None, features))
        cell.built = True
    result = cell.call(step, states)
    if not (isinstance(result, list | tuple) and len(result) == 2):
        raise KdslArgumentError(f"cell `{cell.name}`: `call(inputs, states)` returns (output, new_states)")
    output, new = result
    new = list(new) if isinstance(new, list | tuple) else [new]
    if len(new) != len(states) or not all(isinstance(t, KerasTensor) for t in [output, *new]):
        raise KdslArgumentError(
            f"cell `{cell.name}`: `call` returned {result!r}",
            hint=f"return the output and {len(states)} new state(s), computed with kdsl layers and `kdsl.ops`",
        )
    graph = graph_from_calls(cell.name, [step, *states], [output, *new])
    traced = StepCell(cell.name, graph, tuple((f"state_{i}", size) for i, size in enumerate(sizes)), (None,) * len(new))
    _check_weight_order(cell, traced)
    return traced


def _check_weight_order(cell: Layer, traced: StepCell) -> None:
    """A cell's weights come in the order its step first calls its layers; Keras's in the order the cell holds
    them (assigned as attributes, lists in order). Where the two differ, weights moved between kdsl and Keras by
    position would land in the wrong layers: refused."""
    held: list[Layer] = []
    pending = list(vars(cell).values())
    while pending:
        value = pending.pop(0)
        if isinstance(value, list | tuple | dict):  # Keras tracks the layers in these too, in order
            pending[:0] = list(value.values() if isinstance(value, dict) else value)
        elif isinstance(value, Layer) and hasattr(value, "kind"):
            held.append(value)
    called = [id(layer.config) for layer in traced.layers()]
    held_ids = [id(layer.config) for layer in held if id(layer.config) in called]
    if held_ids != [i for i in called if i in held_ids]:
        raise KdslUnsupportedError(
            f"cell `{cell.name}` calls its layers in another order than it holds them",
            hint="Keras orders a cell's weights as its layers were assigned: assign them in the order `call` "
            "first uses them",
        )


class Bidirectional(Recurring):
    """Runs a recurrent layer forwards and backwards and merges the two."""

    kind = LAYERS["bidirectional"]


class TimeDistributed(Layer):
    """Applies a layer to every timestep."""

    kind = LAYERS["time_distributed"]


class Concatenate(Layer):
    """Concatenates its inputs along `axis`."""

    kind = LAYERS["concatenate"]


class Add(Layer):
    """Adds its inputs element-wise."""

    kind = LAYERS["add"]


class Multiply(Layer):
    """Multiplies its inputs element-wise."""

    kind = LAYERS["multiply"]


class RepeatVector(Layer):
    """Repeats a (batch, features) input `n` times: (batch, n, features)."""

    kind = LAYERS["repeat_vector"]


def concatenate(inputs: Sequence[KerasTensor], axis: int = -1, **kwargs: Any) -> KerasTensor:
    """Keras's functional form of `Concatenate`."""
    return Concatenate(axis=axis, **kwargs)(inputs)


def add(inputs: Sequence[KerasTensor], **kwargs: Any) -> KerasTensor:
    """Keras's functional form of `Add`."""
    return Add(**kwargs)(inputs)


def multiply(inputs: Sequence[KerasTensor], **kwargs: Any) -> KerasTensor:
    """Keras's functional form of `Multiply`."""
    return Multiply(**kwargs)(inputs)
