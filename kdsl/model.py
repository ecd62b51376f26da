"""`Model` and `Sequential`: a model's IR graph behind the API Keras users know."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdsl.catalogue.operations import Operation
from kdsl.errors import KdslArgumentError, KdslUnsupportedError, did_you_mean
from kdsl.functional import graph_from_calls
from kdsl.ir.graph import Graph, Nested, Value, infer_node
from kdsl.ir.nesting import call_nested, check_inputs, nest
from kdsl.lang import load_file
from kdsl.lang.format import to_kd
from kdsl.layers import Input, KerasTensor, Layer, LayerCall
from kdsl.naming import model_name
from kdsl.passes.infer import infer_shapes
from kdsl.runtime.state import ModelState
from kdsl.summary import summary

# Keras's `compile` arguments in its order, as a Sequential model waiting for its input keeps them
COMPILE_ARGUMENTS = ("optimizer", "loss", "loss_weights", "metrics", "weighted_metrics", "run_eagerly",
                     "steps_per_execution", "jit_compile", "auto_scale_loss")  # fmt: skip
_INFERENCE = threading.Lock()  # held while a model's forward pass alone is compiled


class Model:
    """A model built from `.kd` text or from Keras-style layer calls: `Model(inputs, outputs)`."""

    keras_class = "Functional"  # what Keras calls a model of this class, nested in another

    def __init__(
        self,
        inputs: KerasTensor | Sequence[KerasTensor],
        outputs: KerasTensor | Sequence[KerasTensor],
        name: str | None = None,
    ):
        self._graph = graph_from_calls(
            model_name("functional") if name is None else name, _as_list(inputs), _as_list(outputs)
        )

    def __repr__(self) -> str:
        return f"<{self.keras_class} name={self.name}>"

    @classmethod
    def from_graph(cls, graph: Graph) -> Model:
        model = cls.__new__(cls)
        model._graph = graph
        for nested in graph.top_layers():  # a model nested in `.kd` text: one entry of `layers`, sharing weights
            if isinstance(nested, Nested) and nested.model is None:
                nested.model = Model.from_graph(nested.graph)
        return model

    @property
    def graph(self) -> Graph:
        return self._graph

    @property
    def name(self) -> str:
        return self.graph.name

    @property
    def input_names(self) -> list[str]:
        return [value.name for value in self.graph.inputs]

    @property
    def output_names(self) -> list[str]:
        return self.graph.output_names

    def count_params(self) -> int:
        return self.graph.param_count()

    @property
    def layers(self) -> list:
        """The layers in Keras's order, each with its weights as the model holds them (the inputs' InputLayers
        among them, where Keras lists them)."""
        from kdsl.model_layers import model_layers

        return model_layers(self, inputs=True)

    @property
    def trainable(self) -> bool:
        return getattr(self, "_trainable", True)

    @trainable.setter
    def trainable(self, value: bool) -> None:
        """Freeze or unfreeze every layer, as Keras's setter does; it takes effect at the next `compile()` of this
        model and of the models it is nested in, which share its layers' configurations."""
        from kdsl.model_layers import InputLayer

        self._trainable = bool(value)
        for layer in self.layers:
            if not isinstance(layer, InputLayer):
                layer.trainable = value

    def get_layer(self, name: str | None = None, index: int | None = None):
        """A layer by name, or by its index in `layers`, as Keras's."""
        layers = self.layers
        if index is not None:
            return layers[index]
        found = next((layer for layer in layers if layer.name == name), None)
        if found is None:
            names = [layer.name for layer in layers]
            raise KdslArgumentError(
                f"no layer named {name!r}", hint=did_you_mean(str(name), names) or f"layers: {names}"
            )
        return found

    @property
    def inputs(self) -> list[KerasTensor]:
        return [KerasTensor(value.type, value.masked, name=value.name) for value in self.graph.inputs]

    @property
    def outputs(self) -> list[KerasTensor]:
        return [KerasTensor(value.type, value.masked, name=value.name) for value in self.graph.outputs]

    def summary(self, print_fn: Callable[[str], object] | None = None) -> None:
        """Print the Keras summary table (or hand it to `print_fn`)."""
        (print_fn or print)(summary(self.graph))

    def to_kd(self) -> str:
        """The model as `.kd` text; `kdsl.lang.load(model.to_kd())` gives back an equal graph."""
        return to_kd(self.graph)

    # --- training (kdsl.runtime.training) ---------------------------------------------------------

    def compile(self, optimizer: Any = None, loss: Any = None, loss_weights: Any = None, metrics: Any = None,
                weighted_metrics: Any = None, run_eagerly: bool = False, steps_per_execution: int = 1,
                jit_compile: bool | str = "auto", auto_scale_loss: bool = True, *, target: str = "cpu",
                seed: int = 0) -> None:  # fmt: skip
        """Choose optimizer, loss(es) and metrics, and compile the training and inference kernels; Keras's
        arguments in Keras's order, then kdsl's own: `target` and the `seed` new weights and dropout draw from.

        What is not given comes from the `.kd` file's `train` block; the optimizer defaults to
        RMSprop without one, as in Keras. `weighted_metrics` count each sample by its `sample_weight` (or
        `class_weight`), as Keras's do; plain `metrics` count every sample alike. kdsl always runs compiled
        kernels in float32, so `steps_per_execution`, `jit_compile` and `auto_scale_loss` change nothing.
        """
        from kdsl.runtime.training import Trainer

        if run_eagerly:
            raise KdslUnsupportedError(
                "`run_eagerly=True`: kdsl runs compiled kernels",
                hint="to step through the computation, compile with target='numpy' (the IR's NumPy interpreter)",
            )
        if jit_compile is False:
            raise KdslUnsupportedError("`jit_compile=False`: kdsl always compiles", hint="leave it out, or 'auto'")
        if not isinstance(steps_per_execution, int) or isinstance(steps_per_execution, bool) or steps_per_execution < 1:
            raise KdslArgumentError(
                f"steps_per_execution must be a whole number of at least 1, got {steps_per_execution!r}"
            )
        train = self.graph.train
        if optimizer is None:
            optimizer = train.optimizer if train is not None else "rmsprop"
        if loss is None and train is not None:
            terms = {o: train.losses.get(o, train.losses.get(None)) for o in self.output_names}
            loss = {o: term.loss for o, term in terms.items() if term is not None}
            loss_weights = loss_weights or {o: term.weight for o, term in terms.items() if term is not None}
            if metrics is None:
                metrics = {o: [*train.metrics.get(None, []), *train.metrics.get(o, [])] for o in self.output_names}
        if loss is None:
            raise KdslArgumentError("compile() needs a loss", hint="e.g. loss='sparse_categorical_crossentropy'")
        graph = infer_shapes(self.graph)  # each layer's weights as trainable as the layer is now
        if getattr(self, "_state", None) is None:  # compiled before its weights were asked for: drawn from `seed`
            self._state = self._new_state(seed)
        state = self._state
        state.detach()  # a device that held the weights gives them back; the new compiled model may take them
        self._trainer = Trainer(graph, optimizer, loss, metrics, loss_weights, target=target, seed=seed, state=state,
                                weighted_metrics=weighted_metrics)  # fmt: skip

    def build_from(self, x: Any) -> None:
        """A functional model is built from its inputs; a Sequential one may wait for its first data."""

    @property
    def state(self) -> ModelState:
        """The model's weights and the generator its dropout draws from; made when first needed (at `compile()`,
        from its seed, or when they are asked for before it, from seed 0), kept by every later `compile()`."""
        if getattr(self, "_state", None) is None:
            self._state = self._new_state(0)
        return self._state

    def _new_state(self, seed: int) -> ModelState:
        """New weights drawn from `seed`, but for those of nested models: the outer state holds their models' own
        arrays, so that training either model shows in the other, as Keras's shared variables do."""
        graph = infer_shapes(self.graph)
        state = ModelState.initial(graph, seed)
        for nested in graph.top_layers():
            if isinstance(nested, Nested):
                state.share(nested.model.state, nested.name)
        return state

    @property
    def weights(self) -> list[np.ndarray]:
        """Every weight as the model holds it, in Keras's order: writing into them changes the model."""
        return list(self.state.weights)

    def _runnable(self):
        """The compiled model that runs inference: the training one once compiled, else a forward pass alone,
        compiled for the CPU when first needed and kept."""
        if getattr(self, "_trainer", None) is not None:
            return self._trainer.compiled
        with _INFERENCE:  # threads predicting at once share one
            if getattr(self, "_inference", None) is None:
                from kdsl.pipeline import compile_model

                self._inference = compile_model(infer_shapes(self.graph), "cpu", training=False, state=self.state)
        return self._inference

    @property
    def trainer(self):
        if getattr(self, "_trainer", None) is None:
            raise KdslArgumentError("the model is not compiled", hint="call model.compile(optimizer, loss) first")
        return self._trainer

    def _training_trainer(self):
        """The trainer, after saying so when a layer's `trainable` changed since `compile()`, which, as in Keras,
        only the next `compile()` takes into account."""
        trainer = self.trainer
        flags = [(layer.config["trainable"], getattr(layer.config.get("layer"), "config", {}).get("trainable"))
                 for layer in self.graph.layers()]  # fmt: skip
        if flags == getattr(self, "_trainable_flags", None):  # as when last checked: no shapes to infer again
            return trainer
        self._trainable_flags = flags
        now = [i for i, p in enumerate(p for layer in infer_shapes(self.graph).layers() for p in layer.params or [])
               if p.trainable]  # fmt: skip
        if now != trainer.compiled.trainable:
            self._trainable_flags = None  # said again at the next call, until the next compile()
            warnings.warn(
                "a layer's `trainable` changed after compile(): it takes effect at the next compile(), as in Keras",
                stacklevel=3,
            )
        return trainer

    def fit(self, x: Any = None, y: Any = None, batch_size: int = 32, epochs: int = 1, verbose: int = 1,
            callbacks: Sequence = (), validation_split: float = 0.0, validation_data: Any = None,
            shuffle: bool = True, initial_epoch: int = 0, sample_weight: Any = None,
            class_weight: Any = None, steps_per_epoch: int | None = None, validation_steps: int | None = None,
            validation_batch_size: int | None = None, validation_freq: int | Sequence[int] = 1):  # fmt: skip
        """Train up to epoch `epochs` over (x, y), from `initial_epoch` (to resume a run, the epochs it did)."""
        self.build_from(x)
        trainer = self._training_trainer()
        self.state.sync()
        return trainer.fit(self, x, y, batch_size, epochs, verbose, validation_split, validation_data, shuffle,
                           initial_epoch, callbacks, sample_weight, class_weight, steps_per_epoch, validation_steps,
                           validation_batch_size, validation_freq)  # fmt: skip

    @property
    def optimizer(self):
        return self.trainer.optimizer

    def train_on_batch(self, x: Any, y: Any) -> float:
        """One optimizer step on one batch; returns its loss."""
        self.build_from(x)
        trainer = self._training_trainer()
        self.state.sync()
        inputs = trainer.inputs(x)
        return trainer.step(inputs, trainer.labels(y, inputs))

    def predict_on_batch(self, x: Any):
        """Model outputs for one batch, in one call; no `compile()` needed."""
        self.build_from(x)
        from kdsl.runtime.training import model_inputs

        self.state.sync()
        outputs = self._runnable().forward(*model_inputs(self.graph, x))
        return outputs[0] if len(outputs) == 1 else outputs

    def __call__(self, x: Any, training: bool = False):
        """`model(x)` on arrays: the outputs, as `predict_on_batch` gives them (inference: `training` must be False).
        On tensors of another model: the outputs as tensors, the model nested in that one as one layer, as in Keras
        (calling it again shares its weights)."""
        if training:
            raise KdslUnsupportedError("model(x, training=True) is not supported", hint="train with fit()")
        tensors = list(x) if isinstance(x, list | tuple) else [x]
        if any(isinstance(t, KerasTensor) for t in tensors):
            return self._call_on_tensors(_as_list(tensors))
        return self.predict_on_batch(x)

    def _call_on_tensors(self, tensors: list[KerasTensor]) -> KerasTensor | list[KerasTensor]:
        """The outputs of a call of this model on tensors: typed now, by the inner nodes on the tensors' types."""
        nested = nest(self.graph, self.name)
        check_inputs(nested, [t.type for t in tensors])
        nodes, nested_call = call_nested(nested, [Value(t.name or "x", t.type, t.masked) for t in tensors])
        for node in nodes:
            infer_node(node)
        call = LayerCall(self, tensors)
        call.outputs = [KerasTensor(v.type, v.masked, call, i) for i, v in enumerate(nested_call.outputs)]
        return call.outputs[0] if len(call.outputs) == 1 else call.outputs

    def save_weights(self, path: str | Path) -> None:
        """The weights as Keras 3's `.weights.h5` file, or by Keras name as kdsl's `.npz`."""
        from kdsl.keras_files import is_keras_file, save_keras_weights
        from kdsl.runtime.saving import save_weights

        if self._writes_files():  # under a strategy of several processes, the chief alone
            (save_keras_weights if is_keras_file(path) else save_weights)(self, path)

    def load_weights(self, path: str | Path) -> None:
        """Weights from a Keras `.weights.h5` (or legacy `.h5`) file, or from kdsl's `.npz`."""
        from kdsl.keras_files import is_keras_file, load_keras_weights
        from kdsl.runtime.saving import load_weights

        (load_keras_weights if is_keras_file(path) else load_weights)(self, path)

    def save(self, path: str | Path) -> None:
        """A `.keras` archive that Keras 3 loads; or one `.kdz` file with the `.kd` source, weights, optimizer and
        random state, from which `kdsl.load_model` resumes training exactly."""
        from kdsl.keras_files import is_keras_file, save_keras_model
        from kdsl.runtime.saving import save_model

        if self._writes_files():  # under a strategy of several processes, the chief alone
            if is_keras_file(path):
                _refuse_operations_in_keras_files(self.graph)
                save_keras_model(self, path, sequential=isinstance(self, Sequential))
            else:
                save_model(self, path)

    def _writes_files(self) -> bool:
        """Whether this process writes the model's files: the chief of the strategy it was compiled under."""
        trainer = getattr(self, "_trainer", None)
        return trainer is None or trainer.strategy.is_chief

    def evaluate(self, x: Any = None, y: Any = None, batch_size: int = 32, verbose: int | str = "auto",
                 sample_weight: Any = None, steps: int | None = None, return_dict: bool = False):  # fmt: skip
        """Loss and metrics on (x, y): a list `[loss, *metrics]` as Keras returns, or a dict; over the first `steps`
        batches of a dataset when given. `verbose` other than 0 (Keras's default "auto", 1, 2) shows a status line
        on stderr while kernels compile; kdsl draws no progress bar here."""
        self.build_from(x)
        trainer = self.trainer
        self.state.sync()
        logs = trainer.evaluate(x, y, batch_size, steps, sample_weight, verbose)
        return logs if return_dict else list(logs.values())

    def predict(self, x: Any, batch_size: int = 32, verbose: int | str = "auto"):
        """Model outputs for x: one array, or a list when the model has several outputs; no `compile()` needed.
        `verbose` other than 0 (Keras's default "auto", 1, 2) shows a status line on stderr while kernels compile;
        kdsl draws no progress bar here."""
        self.build_from(x)
        from kdsl.runtime.training import predict

        self.state.sync()
        outputs = predict(self._runnable(), x, batch_size, verbose)
        return outputs[0] if len(outputs) == 1 else outputs

    def get_weights(self) -> list:
        """Every weight, in Keras's order and layout; no `compile()` needed."""
        return [w.copy() for w in self.state.weights]

    def set_weights(self, weights: Sequence) -> None:
        current = self.state.weights
        if len(weights) != len(current):
            raise KdslArgumentError(f"set_weights needs {len(current)} arrays, got {len(weights)}")
        for i, (name, old, new) in enumerate(zip(self.state.names, current, weights)):
            new = np.asarray(new, np.float32)
            if new.shape != old.shape:
                raise KdslArgumentError(f"weight {i} (`{name}`) must have shape {old.shape}, got {new.shape}")
            old[...] = new

    def reset_state(self) -> None:
        """Zeros in the states its stateful RNNs carry from batch to batch, as their `reset_state` in Keras."""
        self.state.reset_carried()

    def reset_states(self) -> None:
        """Keras's older name of `reset_state`."""
        self.reset_state()


class Sequential(Model):
    """A stack of single-input, single-output layers. Its input comes, as in Keras, from a `kdsl.Input(shape=...)`
    first, from the `input_shape` (or `input_dim`) of its first layer, or else from the first data it is given
    (`fit`, `predict`, `evaluate`...): until then its layers wait, and `compile()` waits with them."""

    keras_class = "Sequential"

    def __init__(self, layers: Sequence[KerasTensor | Layer | Model] | None = None, name: str | None = None):
        self._name = model_name("sequential") if name is None else name
        self._input: KerasTensor | None = None
        self._output: KerasTensor | None = None
        self._waiting: list[Layer] = []  # layers added before the model had an input
        self._compile_args: dict | None = None  # a compile() made before then
        self._built: tuple[KerasTensor, Graph] | None = None  # the graph, for the output it was built up to
        for layer in layers or []:
            self.add(layer)

    def add(self, layer: KerasTensor | Layer | Model) -> None:
        """A layer, or a model (nested as one layer), after the others; or the model's Input, first."""
        if isinstance(layer, KerasTensor):
            if self._input is not None or self._waiting:
                raise KdslArgumentError("a Sequential model takes one Input, first")
            self._input = self._output = layer
            return
        if not isinstance(layer, Layer | Model):
            raise KdslArgumentError(f"Sequential.add expects a layer, got {layer!r}")
        if self._output is None and not self._waiting:
            self._input = self._output = _given_input(layer)
        if self._output is None:
            self._waiting.append(layer)
            return
        output = layer(self._output)
        if isinstance(output, list):
            what = layer.name if isinstance(layer, Model) else layer.kind.keras
            raise KdslArgumentError(f"`{what}` gives {len(output)} outputs; a Sequential layer gives one")
        self._output = output

    def build_from(self, x: Any) -> None:
        """Give a model without an input one shaped like the samples of `x`, as Keras builds from the first data."""
        if self._input is not None or not isinstance(x, np.ndarray | list | tuple):
            return  # a dataset or generator: the model's own error says what it needs
        sample = np.asarray(x[0] if isinstance(x, list | tuple) and x else x)
        if sample.ndim < 1:
            raise KdslArgumentError("a Sequential model without an input shape needs arrays of samples to build from")
        dtype = "int32" if np.issubdtype(sample.dtype, np.integer) else "float32"
        self._start(Input(shape=sample.shape[1:], dtype=dtype))

    def _start(self, input: KerasTensor) -> None:
        """Give the model its input, then the layers that waited for it, and make the compile() that waited."""
        waiting, self._waiting = self._waiting, []
        self.add(input)
        for layer in waiting:
            self.add(layer)
        if self._compile_args is not None:
            self.compile(**self._compile_args)

    def _call_on_tensors(self, tensors: list[KerasTensor]) -> KerasTensor | list[KerasTensor]:
        """As Keras, a model still without an input takes one shaped like the first tensors it is called on."""
        if self._input is None and len(tensors) == 1:
            self._start(KerasTensor(tensors[0].type, tensors[0].masked))
        return super()._call_on_tensors(tensors)

    @property
    def layers(self) -> list:
        """The layers, as Keras lists a Sequential model's: without its InputLayer; before the model has an input,
        the layers waiting for it."""
        if self._input is None:
            return list(self._waiting)
        from kdsl.model_layers import model_layers

        return model_layers(self, inputs=False)

    def compile(self, *args: Any, **kwargs: Any) -> None:
        if self._input is None:  # no input yet: compile with the first data
            self._compile_args = dict(zip(COMPILE_ARGUMENTS, args))
            self._compile_args.update(kwargs)
            return
        super().compile(*args, **kwargs)

    @property
    def name(self) -> str:
        return self._name

    @property
    def graph(self) -> Graph:
        if self._input is None or self._output is None:
            raise KdslArgumentError(
                "this Sequential model has no input shape yet",
                hint="start it with kdsl.Input(shape=...), give its first layer input_shape=, or give it data first",
            )
        if self._built is None or self._built[0] is not self._output:  # built anew once a layer is added
            self._built = (self._output, graph_from_calls(self._name, [self._input], [self._output]))
        return self._built[1]


def _refuse_operations_in_keras_files(graph: Graph) -> None:
    """kdsl does not write Keras's serialization of `keras.ops` nodes (`x + y`, `tanh(x)`) into `.keras` files."""
    operation = next((layer for layer in graph.layers() if isinstance(layer.kind, Operation)), None)
    if operation is not None:
        raise KdslUnsupportedError(
            f"a `.keras` file cannot hold the operation `{operation.name}` ({operation.kind.keras}) yet",
            hint="save to a `.kdz` file, which keeps arithmetic and `kdsl.ops` calls",
        )


def load_model_file(path: str | Path, name: str | None = None) -> Model:
    """The model `name` (or the only one) of a `.kd` file, with its train block."""
    return Model.from_graph(load_file(path).model(name))


def _given_input(layer: Layer | Model) -> KerasTensor | None:
    """The input a Sequential model gets from its first layer: its `input_shape`, or a nested model's own input."""
    if isinstance(layer, Layer):
        return None if layer.input_shape is None else Input(shape=layer.input_shape)
    if isinstance(layer, Sequential) and layer._input is None:
        return None
    value = layer.graph.inputs[0]
    return KerasTensor(value.type, value.masked)


def _as_list(tensors: KerasTensor | Sequence[KerasTensor]) -> list[KerasTensor]:
    items = list(tensors) if isinstance(tensors, (list, tuple)) else [tensors]
    for item in items:
        if not isinstance(item, KerasTensor):
            raise KdslArgumentError(f"expected a tensor from kdsl.Input or a layer call, got {item!r}")
    return items


def load_model(path: str | Path, custom_objects: Any = None, compile: bool = True, safe_mode: bool = True) -> Model:
    """A model saved by `Model.save` as `.kdz`, compiled and ready to go on training where it stopped; or a Keras
    `.keras` (or legacy `.h5`) model, with its weights and its compile settings as train block, compiled with them
    unless `compile=False` and its optimizer going on from the state Keras saved, as Keras loads it."""
    from kdsl.keras_files import is_keras_file, load_keras_model
    from kdsl.runtime.saving import read_saved, restore

    if custom_objects:
        raise KdslUnsupportedError("`custom_objects`: kdsl loads Keras's own classes only",
                                   hint="a model with a custom layer cannot be loaded")  # fmt: skip
    if not safe_mode:
        raise KdslUnsupportedError("`safe_mode=False`: kdsl never runs code from a file, so there is nothing to allow",
                                   hint="leave safe_mode at True")  # fmt: skip
    if is_keras_file(path):
        return load_keras_model(path, Model, Sequential, compile)
    if not compile:
        raise KdslArgumentError(f"{path}: a .kdz model always loads compiled, to go on training where it stopped",
                                hint="leave compile at True")  # fmt: skip

    saved = read_saved(path)
    model = Model.from_graph(saved.graph)
    restore(model, saved)
    return model
