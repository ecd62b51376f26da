"""`Model.compile / fit / evaluate / predict`: batches, optimizer steps, metrics and a Keras-style log.

A `Trainer` holds what `compile` chose (the compiled kernels, optimizer, losses, metrics).
Bad arrays are refused before any kernel runs, with the input's name and expected shape.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdsl.backends.compiled import CompiledModel
from kdsl.catalogue.args import FnSpec
from kdsl.catalogue.functions import LOSSES
from kdsl.curves import plot_curves
from kdsl.distribute.strategy import current as current_strategy
from kdsl.errors import KdslArgumentError
from kdsl.ir.builder import Builder
from kdsl.ir.graph import Graph, LossTerm, Value
from kdsl.ir.interpret import bind_sizes, run_program
from kdsl.ir.program import Program
from kdsl.ir.types import TensorType, concrete
from kdsl.memory import BYTES_PER_NUMBER, require
from kdsl.passes.losses import total_loss
from kdsl.pipeline import compile_model
from kdsl.runtime import metrics as metric_fns
from kdsl.runtime.optimizers import Optimizer
from kdsl.runtime.optimizers import get as get_optimizer
from kdsl.runtime.state import ModelState

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Data = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]


@dataclass
class History:
    """What `fit` returns: `history[name]` is one value per epoch logged (validation, every `validation_freq`
    epochs); `logged_at[name]` the epochs (from 0) it was logged at, which lines its values up on a plot."""

    history: dict[str, list[float]] = field(default_factory=dict)
    epoch: list[int] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    logged_at: dict[str, list[int]] = field(default_factory=dict)

    def record(self, epoch: int, logs: Mapping[str, float]) -> None:
        self.epoch.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
            self.logged_at.setdefault(key, []).append(epoch)

    def plot(self, to_file: str | Path | None = None) -> Figure:
        """The training curves: one panel per quantity, training and validation together, by epoch (from 1);
        written to `to_file` (.png, .svg or .pdf) when given. Returns the matplotlib Figure."""
        epochs = {key: self.logged_at.get(key, self.epoch) for key in self.history}  # made by hand: every epoch
        return plot_curves({key: ([e + 1 for e in epochs[key]], values) for key, values in self.history.items()},
                           to_file)  # fmt: skip


def as_arrays(data: Data, names: Sequence[str], types: Sequence[TensorType], what: str) -> list[np.ndarray]:
    """Arrays in graph order from an array, a list or a dict by name; shapes and dtypes checked."""
    if isinstance(data, Mapping):
        missing = [n for n in names if n not in data]
        if missing:
            raise KdslArgumentError(f"no {what} given for {', '.join(map(repr, missing))}; got {sorted(data)}")
        data = [data[n] for n in names]
    elif isinstance(data, np.ndarray) or not isinstance(data, Sequence):
        data = [data]
    elif len(names) == 1 and not (len(data) == 1 and isinstance(data[0], np.ndarray)):
        data = [data]  # nested lists holding one input's values
    if len(data) != len(names):
        raise KdslArgumentError(f"expected {len(names)} {what} arrays ({', '.join(names)}), got {len(data)}")
    arrays = []
    for array, name, type in zip(data, names, types):
        array = np.asarray(array)
        # the first axis counts samples, whether or not the model fixes a batch size (its batches are checked)
        expected = (None, *(None if isinstance(d, str) else d for d in type.dims[1:]))
        shape_ok = array.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, array.shape))
        if not shape_ok:
            shown = str(tuple(expected))
            raise KdslArgumentError(f"{what} `{name}` must have shape {shown}, got {array.shape}")
        if array.shape[0] == 0:
            raise KdslArgumentError(f"{what} `{name}` is empty")
        if array.dtype.kind not in "biuf":  # strings, bytes, objects, complex numbers
            raise KdslArgumentError(f"{what} `{name}` must hold numbers, got {array.dtype}")
        if type.dtype == "i32":
            if not np.issubdtype(array.dtype, np.integer):
                raise KdslArgumentError(f"{what} `{name}` must hold integers (i32), got {array.dtype}")
            if array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max:
                raise KdslArgumentError(f"{what} `{name}` holds integers beyond int32: [{array.min()}, {array.max()}]")
            array = array.astype(np.int32)
        else:
            array = array.astype(np.float32)
            if not np.isfinite(array).all():
                raise KdslArgumentError(f"{what} `{name}` contains NaN or infinite values")
        arrays.append(array)
    if len({a.shape[0] for a in arrays}) > 1:
        raise KdslArgumentError(f"{what} arrays have different numbers of samples: {[a.shape[0] for a in arrays]}")
    return arrays


class Trainer:
    def __init__(
        self,
        graph: Graph,
        optimizer: Optimizer | FnSpec | str,
        loss: Any,
        metrics: Any = None,
        loss_weights: Any = None,
        target: str = "cpu",
        seed: int = 0,
        state: ModelState | None = None,
        weighted_metrics: Any = None,
    ):
        """`state` holds the model's weights (new ones drawn from `seed` without it)."""
        self.graph = graph
        self.losses = _loss_terms(graph, loss, loss_weights)
        self._optimizer = get_optimizer(optimizer)
        self.strategy = current_strategy()  # that of the `strategy.scope()` compiling the model
        self.strategy.check_target(target)
        trained = graph.param_count(trainable=True)
        require(
            BYTES_PER_NUMBER * (graph.param_count() + trained * (1 + self._optimizer.slots_per_weight())),
            f"model `{graph.name}`'s weights, gradients and {self._optimizer.name} slots",
            hint="make the layers smaller, or train with an optimizer that keeps fewer slots (sgd)",
        )
        self.compiled: CompiledModel = compile_model(graph, target, losses=self.losses, seed=seed, state=state)
        assert self.compiled.training is not None
        self.targets = self.compiled.training.targets
        self.targets_weights = self.compiled.training.sample_weights
        target_types = [t.type for t in self.targets]
        self.metrics = _metrics(graph, self.losses, metrics, target_types)
        self.weighted_metrics = _metrics(graph, self.losses, weighted_metrics, target_types)
        self.rng = np.random.default_rng(seed)
        self.evaluation = _evaluation_program(self.compiled, self.losses)

    # --- data -------------------------------------------------------------------------------------

    def inputs(self, x: Data) -> list[np.ndarray]:
        return model_inputs(self.graph, x)

    def labels(self, y: Data, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The targets of `y` checked against the outputs; `inputs` size the outputs' symbolic dims."""
        names = self.graph.output_names
        arrays = []
        if isinstance(y, Mapping):
            given = y
        elif len(names) == 1 and not (isinstance(y, list | tuple) and len(y) == 1):
            given = {names[0]: y}
        else:
            given = dict(zip(names, y))
        for name, var, output, loss in zip(names, self.targets, self.graph.outputs, self.losses):
            array = np.asarray(given.get(name)) if name in given else None
            if array is None:
                raise KdslArgumentError(f"no target given for output `{name}`")
            if var.type.dtype == "i32" and array.ndim == var.rank + 1 and array.shape[-1] == 1:
                array = array[..., 0]  # Keras accepts sparse labels shaped (batch, 1)
            if var.type.dtype == "f32" and array.ndim == var.rank - 1 and var.shape[-1] == 1:
                array = array[..., None]
            try:
                (array,) = as_arrays(array, [name], [var.type], "target")
            except KdslArgumentError as error:
                error.hint = error.hint or _label_hint(loss.loss.name, array, output)
                raise
            if var.type.dtype == "i32":
                (classes,) = concrete(output.type.dims[-1:], bind_sizes(self.compiled.training.lowered.inputs, inputs))
                if array.min() < 0 or array.max() >= classes:
                    raise KdslArgumentError(
                        f"target `{name}` has class ids in [{array.min()}, {array.max()}], "
                        f"but the output has {classes} classes (ids 0..{classes - 1})"
                    )
            arrays.append(array)
        return arrays

    # --- loops ----------------------------------------------------------------------------------

    def fit(self, model, x, y, batch_size=32, epochs=1, verbose=1, validation_split=0.0, validation_data=None,
            shuffle=True, initial_epoch=0, callbacks=(), sample_weight=None, class_weight=None,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None,
            validation_freq=1) -> History:  # fmt: skip
        """Train `model` (whose trainer this is) from epoch `initial_epoch` up to epoch `epochs`, as Keras does.

        `x` is the inputs (with targets `y`), or a `kdsl.data.Dataset` / iterable / generator of
        `(x, y)` or `(x, y, sample_weight)` batches; so is `validation_data` (`validation_steps` batches of it,
        or all), evaluated every `validation_freq` epochs (a number), or after the epochs it lists (from 1).
        """
        _counts(batch_size=batch_size, steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                validation_batch_size=validation_batch_size)  # fmt: skip
        _counts(least=0, epochs=epochs, initial_epoch=initial_epoch)
        if isinstance(validation_freq, int):
            _counts(validation_freq=validation_freq)
        if not (isinstance(validation_split, int | float) and 0 <= validation_split < 1):
            raise KdslArgumentError(f"validation_split is a fraction in [0, 1), got {validation_split!r}")
        if _is_batches(x):
            if y is not None:
                raise KdslArgumentError("with a dataset or generator of batches, give no separate `y`")
            epoch_batches, steps = self._batch_source(x, steps_per_epoch, epochs)
        else:
            epoch_batches, steps, validation_data = self._array_source(
                x, y, batch_size, shuffle, validation_split, validation_data, sample_weight, class_weight
            )
        history = History(params={"epochs": epochs, "steps": steps, "verbose": verbose})
        redraw = sys.stdout.isatty()
        chief = self.strategy.is_chief  # only the chief prints and writes files
        verbose = verbose if chief else 0
        callbacks = [c for c in callbacks if chief or not getattr(c, "chief_only", False)]
        self.strategy.synchronize(self.compiled.state)  # the chief's weights; each replica's own dropout stream
        if initial_epoch < epochs:  # compiled before any clock starts: no step, epoch or callback counts it
            entries = ["train_step", *(["forward"] if validation_data is not None else [])]  # what the epochs run
            self.compiled.warm_up(entries, self._optimizer, verbose=bool(verbose))
        model.stop_training = False
        for callback in callbacks:
            callback.set_model(model)
            callback.on_train_begin()
        initial_epoch, skipped = _resumed(model, initial_epoch)
        for epoch in range(initial_epoch, epochs):
            if model.stop_training:
                break
            for callback in callbacks:
                callback.on_epoch_begin(epoch)
            if verbose:
                print(f"Epoch {epoch + 1}/{epochs}")
            tracker = _Tracker(self.metrics, self.weighted_metrics, self.graph.output_names, self.strategy.reduce_sum)
            started = shown = time.perf_counter()
            done = skipped
            batches = itertools.islice(epoch_batches(), skipped, None)  # a backup's batches done, when it resumes
            full = None if _is_batches(x) else batch_size  # a full batch's size, to split the last one as it splits
            for done, batch in enumerate(batches, skipped + 1):
                global_rows = batch[0][0].shape[0]
                batch_inputs, batch_labels, batch_weights = self.strategy.shard(*batch, full)  # this replica's part
                loss = self.step(batch_inputs, batch_labels, batch_weights, global_rows)
                compiled = self.compiled
                tracker.update(loss, compiled.outputs, batch_labels, compiled.masks, batch_weights,
                               compiled.output_losses)  # fmt: skip
                batch_logs = tracker.logs() if callbacks else {}  # the epoch's means so far, as Keras gives them
                for callback in callbacks:
                    callback.on_train_batch_end(done - 1, batch_logs)
                if model.stop_training:
                    break
                # redraw the bar ten times a second, on a terminal only: in a log file each redraw would be a line
                if verbose == 1 and redraw and time.perf_counter() - shown > 0.1:
                    _progress(done, steps, started, tracker.logs(), end="\r")
                    shown = time.perf_counter()
            logs = tracker.logs()
            due = (
                (epoch + 1) % validation_freq == 0 if isinstance(validation_freq, int) else epoch + 1 in validation_freq
            )
            if validation_data is not None and due:
                if _is_batches(validation_data):
                    scores = self.evaluate(validation_data, None, steps=validation_steps)
                else:
                    val_x, val_y, *weights = validation_data
                    scores = self.evaluate(val_x, val_y, validation_batch_size or batch_size, validation_steps,
                                           weights[0] if weights else None)  # fmt: skip
                logs.update({f"val_{k}": v for k, v in scores.items()})
            if verbose:
                _progress(done, steps or done, started, logs, end="\n")
            skipped = 0
            for callback in callbacks:
                callback.on_epoch_end(epoch, logs)
            history.record(epoch, logs)
        for callback in callbacks:
            callback.on_train_end()
        return history

    def _array_source(self, x, y, batch_size, shuffle, validation_split, validation_data, sample_weight,
                      class_weight):  # fmt: skip
        """Batches of in-memory arrays, reshuffled each epoch; holds out Keras's validation split."""
        inputs = self.inputs(x)
        labels = self.labels(y, inputs)
        weights = self.sample_weights(sample_weight, class_weight, labels)
        count = inputs[0].shape[0]
        if labels[0].shape[0] != count:
            raise KdslArgumentError(f"inputs have {count} samples but targets have {labels[0].shape[0]}")
        if validation_split and validation_data is None:  # Keras takes the last samples, before shuffling
            cut = int(count * (1 - validation_split))
            validation_data = ([a[cut:] for a in inputs], [a[cut:] for a in labels])
            if sample_weight is not None:  # their sample weights go with them (class weights only train)
                given = self.sample_weights(sample_weight, None, labels)
                named = {n: w[cut:] for n, w in zip(self.graph.output_names, given) if w is not None}
                validation_data = (*validation_data, named)
            inputs, labels, count = [a[:cut] for a in inputs], [a[:cut] for a in labels], cut
            weights = [w if w is None else w[:cut] for w in weights]

        def epoch_batches():
            order = self.rng.permutation(count) if shuffle else np.arange(count)
            for start in range(0, count, batch_size):
                rows = order[start : start + batch_size]
                yield (
                    [a[rows] for a in inputs],
                    [a[rows] for a in labels],
                    [w if w is None else w[rows] for w in weights],
                )

        return epoch_batches, -(-count // batch_size), validation_data

    def _batch_source(self, batches, steps_per_epoch, epochs):
        """Batches from a dataset (a new pass each epoch) or a generator (`steps_per_epoch` of it each epoch)."""
        reiterable = iter(batches) is not batches
        if not reiterable and steps_per_epoch is None and epochs > 1:
            raise KdslArgumentError("a generator runs out after one pass", hint="pass steps_per_epoch=N to fit()")
        stream = iter(batches)

        def epoch_batches():
            source = iter(batches) if reiterable else stream
            for step, batch in enumerate(source):
                if steps_per_epoch is not None and step >= steps_per_epoch:
                    return
                x, y, *weight = batch
                inputs = self.inputs(x)
                labels = self.labels(y, inputs)
                yield inputs, labels, self.sample_weights(weight[0] if weight else None, None, labels)

        steps = steps_per_epoch or (len(batches) if hasattr(batches, "__len__") else None)
        return epoch_batches, steps

    def step(self, inputs: list[np.ndarray], labels: list[np.ndarray], weights=None, global_rows=None) -> float:
        """One training step and optimizer update on one batch of checked arrays; returns the loss. Under a strategy
        of several replicas, the batch is this replica's shard of a global batch of `global_rows` samples (None:
        every replica has the same batch), and the update is the global batch's."""
        loss = self.strategy.train_step(self.compiled, inputs, labels, weights, global_rows)
        self.compiled.apply_optimizer(self._optimizer)
        return loss

    @property
    def optimizer(self) -> Optimizer:
        """The optimizer, its slots current on the host (the CUDA target keeps them on the device)."""
        self.compiled.sync_optimizer(self._optimizer)
        return self._optimizer

    def sample_weights(self, sample_weight: Any, class_weight: Any, labels: list[np.ndarray]) -> list:
        """Per output, each sample's loss weight (None: all ones), from `sample_weight` or `class_weight`."""
        names = self.graph.output_names
        if sample_weight is not None and class_weight is not None:
            raise KdslArgumentError("give sample_weight or class_weight, not both")
        if class_weight is not None:
            if len(names) != 1:
                raise KdslArgumentError("class_weight needs a single-output model; use sample_weight per output")
            ids = labels[0] if labels[0].dtype == np.int32 else np.argmax(labels[0], axis=-1)
            table = np.ones(int(ids.max()) + 1 if ids.size else 1, np.float32)
            for label, weight in class_weight.items():
                if 0 <= int(label) < len(table):
                    table[int(label)] = weight
            if not np.isfinite(table).all():
                raise KdslArgumentError("class_weight holds NaN or infinite weights")
            sample_weight = table[ids]
        if sample_weight is None:
            return [None] * len(names)
        if isinstance(sample_weight, Mapping):
            given = [sample_weight.get(n) for n in names]
        else:
            given = [sample_weight] if len(names) == 1 else list(sample_weight)
        weights = []
        for name, w, var, label in zip(names, given, self.compiled.training.sample_weights, labels):
            if w is None:
                weights.append(None)
                continue
            w = np.asarray(w, np.float32)
            if not np.isfinite(w).all():
                raise KdslArgumentError(f"sample_weight for `{name}` holds NaN or infinite weights")
            shape = label.shape[: var.rank]
            if w.shape == shape[:-1] and var.rank > 1:  # one weight per sample of a per-timestep loss, as Keras
                w = np.broadcast_to(w[..., None], shape)  # expands it (squeeze_or_expand_to_same_rank)
            if w.shape != shape:
                expected = f"{shape} or {shape[:-1]}" if var.rank > 1 else f"{shape}"
                raise KdslArgumentError(f"sample_weight for `{name}` must have shape {expected}, got {w.shape}")
            weights.append(w)
        return weights

    def predict(self, x: Data, batch_size: int = 32, verbose: int | str = 0) -> list[np.ndarray]:
        """Outputs for arrays, or for a dataset / iterable of input batches (or of (x, y) batches)."""
        return predict(self.compiled, x, batch_size, verbose)

    def evaluate(
        self,
        x: Data,
        y: Data,
        batch_size: int = 32,
        steps: int | None = None,
        sample_weight: Any = None,
        verbose: int | str = 0,
    ) -> dict[str, float]:
        """Loss and metrics over arrays, or over a dataset / iterable of (x, y[, sample_weight]) batches (the first
        `steps` of them). Sample weights weigh the loss, as in Keras; the metrics count every sample. With
        `verbose`, a status line says what compiles (see `CompiledModel.warm_up`)."""
        _counts(batch_size=batch_size, steps=steps)
        tracker = _Tracker(self.metrics, self.weighted_metrics, self.graph.output_names, self.strategy.reduce_sum)
        batches = itertools.islice(self._evaluation_batches(x, y, batch_size, sample_weight), steps)
        for index, batch in enumerate(batches):
            if index == 0:  # once the first batch is checked
                self.compiled.warm_up(["forward"], verbose=bool(verbose) and self.strategy.is_chief)
            inputs, labels, weights = self.strategy.shard(*batch, None if _is_batches(x) else batch_size)
            if not labels[0].shape[0]:  # none: its share of the sums is nothing
                tracker.update(0.0, [], labels, [], weights)
                continue
            outputs, masks = self.compiled.forward_with_masks(*inputs)
            present = [m for m in masks if m is not None]
            arrays = [*outputs, *labels, *self._all_weights(weights, labels), *present, *self.compiled.weights]
            loss, *output_losses = run_program(self.evaluation, arrays)
            tracker.update(float(loss), outputs, labels, masks, weights, [float(v) for v in output_losses])
        return tracker.logs()

    def _evaluation_batches(self, x: Data, y: Data, batch_size: int, sample_weight: Any):
        """(inputs, labels, sample weights per output or None) for each batch to evaluate."""
        if _is_batches(x):
            for bx, by, *rest in x:
                inputs = self.inputs(bx)
                labels = self.labels(by, inputs)
                yield inputs, labels, self.sample_weights(rest[0] if rest else None, None, labels)
            return
        inputs = self.inputs(x)
        labels = self.labels(y, inputs)
        weights = self.sample_weights(sample_weight, None, labels)
        for s in range(0, inputs[0].shape[0], batch_size):
            cut = slice(s, s + batch_size)
            yield [a[cut] for a in inputs], [a[cut] for a in labels], [w if w is None else w[cut] for w in weights]

    def _all_weights(self, weights: list, labels: list[np.ndarray]) -> list[np.ndarray]:
        """Each output's sample weights, ones where none were given, shaped like its per-sample loss."""
        shapes = [[t for _, t in zip(var.shape, label.shape)] for var, label in zip(self.targets_weights, labels)]
        return [np.ones(shape, np.float32) if w is None else w for w, shape in zip(weights, shapes)]


def _label_hint(loss: str, labels: np.ndarray, output: Value) -> str | None:
    """What to do when labels look like the other kind of crossentropy's."""
    classes = output.type.dims[-1]
    if (
        loss == "categorical_crossentropy"
        and np.issubdtype(labels.dtype, np.integer)
        and labels.ndim == output.type.rank - 1
    ):
        return "these look like class ids: use sparse_categorical_crossentropy, or one-hot them (to_categorical)"
    if loss == "sparse_categorical_crossentropy" and labels.ndim == output.type.rank and labels.shape[-1] == classes:
        return "these look like one-hot rows: use categorical_crossentropy, or give class ids (labels.argmax(-1))"
    return None


def _counts(least: int = 1, **given: Any) -> None:
    """Refuse a count (batch size, steps, epochs) that is not a whole number of at least `least`; None passes."""
    for name, value in given.items():
        if value is not None and (not isinstance(value, int | np.integer) or isinstance(value, bool) or value < least):
            raise KdslArgumentError(f"{name} must be a whole number of at least {least}, got {value!r}")


def model_inputs(graph: Graph, x: Data) -> list[np.ndarray]:
    """A model's input arrays, checked, from an array, a list or a dict by name; token ids an embedding reads
    within its table."""
    arrays = as_arrays(x, [v.name for v in graph.inputs], [v.type for v in graph.inputs], "input")
    for value, array in zip(graph.inputs, arrays):
        tables = [node.layer.config["input_dim"] for node in graph.nodes
                  if node.layer.kind.name == "embedding" and value in node.inputs]  # fmt: skip
        for rows in tables:
            if array.min() < 0 or array.max() >= rows:
                raise KdslArgumentError(
                    f"input `{value.name}` has token ids in [{array.min()}, {array.max()}], but its embedding has "
                    f"{rows} rows (ids 0..{rows - 1})"
                )
    return arrays


def predict(compiled: CompiledModel, x: Data, batch_size: int = 32, verbose: int | str = 0) -> list[np.ndarray]:
    """Outputs for arrays, or for a dataset / iterable of input batches (or of (x, y) batches), batch by batch;
    with `verbose`, a status line says what compiles (see `CompiledModel.warm_up`)."""
    _counts(batch_size=batch_size)
    if _is_batches(x):
        batch_inputs = (model_inputs(compiled.graph, b[0] if isinstance(b, tuple) else b) for b in x)
    else:
        inputs = model_inputs(compiled.graph, x)
        batch_inputs = ([a[s : s + batch_size] for a in inputs] for s in range(0, inputs[0].shape[0], batch_size))
    batches = []
    for batch in batch_inputs:
        if not batches:  # once the first batch is checked
            compiled.warm_up(["forward"], verbose=bool(verbose))
        batches.append(compiled.forward(*batch))
    return [np.concatenate(parts) for parts in zip(*batches)]


class _Tracker:
    """Epoch means of the loss and of each (output, metric): `metrics` count every sample alike, `weighted` ones
    by the samples' weights, as Keras's `metrics` and `weighted_metrics`."""

    def __init__(self, metrics: list[list[tuple[str, str]]], weighted: list[list[tuple[str, str]]], names: list[str],
                 reduce: Callable[[list[tuple[float, float]]], list[tuple[float, float]]]):  # fmt: skip
        """`reduce` sums each batch's (total, count) pairs over the replicas of a distribution strategy."""
        self.metrics, self.weighted, self.names, self.reduce = metrics, weighted, names, reduce
        self.loss = metric_fns.Mean()
        # with several outputs, each one's own loss, as Keras logs `<output>_loss`
        self.output_losses = {f"{n}_loss": metric_fns.Mean() for n in names} if len(names) > 1 else {}
        self.keys = _metric_keys(metrics, weighted, names)
        self.means = {key: metric_fns.Mean() for key in self.keys}

    def update(self, loss: float, outputs, labels, masks, weights, output_losses: Sequence[float] = ()) -> None:
        """One batch: its loss and each output's (weighing as many as the batch has samples), and each metric on
        its outputs, whose timesteps count by the output's mask where it has one, and each sample by its weight
        (None: one) for a weighted metric. A replica's empty shard adds nothing."""
        means = [self.loss, *self.output_losses.values(), *self.means.values()]
        totals = self._totals(loss, outputs, labels, masks, weights, output_losses) if labels[0].shape[0] else []
        for mean, (total, count) in zip(means, self.reduce(totals or [(0.0, 0.0)] * len(means)), strict=True):
            mean.add(total, count)

    def _totals(self, loss, outputs, labels, masks, weights, output_losses) -> list[tuple[float, float]]:
        rows = labels[0].shape[0]
        totals = [(loss * rows, rows)]
        for _, value in zip(self.output_losses, output_losses, strict=bool(self.output_losses)):
            totals.append((value * rows, rows))
        for table, weighted in ((self.metrics, False), (self.weighted, True)):
            for names, output, label, mask, weight in zip(table, outputs, labels, masks, weights):
                for _, name in names:
                    totals.append(metric_fns.batch_totals(name, label, output, mask, weight if weighted else None))
        return totals

    def logs(self) -> dict[str, float]:
        means = {**self.output_losses, **self.means}
        return {"loss": self.loss.result(), **{k: m.result() for k, m in means.items()}}


def _metric_keys(metrics: list[list[tuple[str, str]]], weighted: list[list[tuple[str, str]]], names: list[str]):
    """The names metrics are logged under, as Keras gives them: `<output>_` before each with several outputs; a
    name taken already gets `_1`, `_2`...; a weighted metric whose name a plain one took is `weighted_<name>`."""
    several = len(names) > 1
    counts: dict[str, int] = {}

    def unique(name: str) -> str:
        if name not in counts:
            counts[name] = 1
            return name
        counts[name] += 1
        return f"{name}_{counts[name] - 1}"

    keys = [unique(f"{n}_{m}" if several else m) for n, ms in zip(names, metrics) for m, _ in ms]
    for n, ms in zip(names, weighted):
        for m, _ in ms:
            key = f"{n}_{m}" if several else m
            keys.append(
                unique(key) if key not in counts else unique(f"{n}_weighted_{m}" if several else f"weighted_{m}")
            )
    return keys


def _resumed(model: Any, initial_epoch: int) -> tuple[int, int]:
    """The epoch to start from and the batches of it done already: `initial_epoch` and none, unless a callback
    (BackupAndRestore) restored a run and left where it had got to, as Keras's `model._initial_epoch`."""
    epoch, batches = getattr(model, "_initial_epoch", None), getattr(model, "_initial_step", 0)
    model._initial_epoch, model._initial_step = None, 0
    return (initial_epoch, 0) if epoch is None else (epoch, batches)


def _is_batches(x: Any) -> bool:
    """A dataset, iterable or generator of batches, as opposed to arrays (or a list or dict of them)."""
    if isinstance(x, np.ndarray | Mapping | list | tuple) or x is None:
        return False
    return hasattr(x, "__iter__") or hasattr(x, "__next__")


def _progress(done: int, steps: int | None, started: float, logs: dict[str, float], end: str) -> None:
    """A Keras-style line: `938/938 [======] - 3s 3ms/step - loss: 0.51 - accuracy: 0.84`."""
    elapsed = time.perf_counter() - started
    steps = steps or done  # a generator's length is known at the end of its first epoch
    bar = "=" * int(30 * done / max(steps, 1))
    bar = (bar[:-1] + ">" if done < steps else bar).ljust(30, ".")
    values = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
    print(f"{done}/{steps} [{bar}] - {elapsed:.0f}s {1000 * elapsed / done:.0f}ms/step - {values}", end=end)
    sys.stdout.flush()


def _loss_terms(graph: Graph, loss: Any, loss_weights: Any) -> list[LossTerm]:
    names = graph.output_names
    if isinstance(loss, Mapping):
        missing = [n for n in names if n not in loss]
        if missing:
            raise KdslArgumentError(f"no loss for output(s) {', '.join(missing)}")
        losses = [loss[n] for n in names]
    elif isinstance(loss, list | tuple):
        losses = list(loss)
    else:
        losses = [loss] * len(names)
    if isinstance(loss_weights, Mapping):
        weights = [float(loss_weights.get(n, 1.0)) for n in names]
    else:
        weights = [float(w) for w in loss_weights] if loss_weights is not None else [1.0] * len(names)
    return [LossTerm(LOSSES.checked(spec), weight) for spec, weight in zip(losses, weights, strict=True)]


def _metrics(graph: Graph, losses: list[LossTerm], metrics: Any, target_types) -> list[list[tuple[str, str]]]:
    """Per output, (log name, metric function name) pairs."""
    names = graph.output_names
    if isinstance(metrics, Mapping):
        chosen = [list(metrics.get(n) or []) for n in names]
    elif len(names) == 1:
        chosen = [list(metrics or [])]
    elif all(m is None or isinstance(m, list | tuple) for m in metrics or []) and len(metrics or []) in (0, len(names)):
        chosen = [list(m or []) for m in metrics] if metrics else [[] for _ in names]
    else:  # Keras refuses a flat list for several outputs too
        raise KdslArgumentError(
            f"`metrics` for a model with outputs {names} is a list per output or a dict by output name",
            hint=f"e.g. metrics={{{names[0]!r}: ['accuracy']}}",
        )
    return [
        [(_display_name(m), metric_fns.resolve(m, term.loss, output.type.dims, t.rank)) for m in ms]
        for ms, term, output, t in zip(chosen, losses, graph.outputs, target_types)
    ]


def _display_name(metric: Any) -> str:
    """The key a metric is logged under: the name the user gave, as Keras logs `accuracy`."""
    return metric if isinstance(metric, str) else metric.name


def _evaluation_program(compiled: CompiledModel, losses: list[LossTerm]) -> Program:
    """The total loss (regularizers included) from outputs, targets, sample weights, the outputs' masks and the
    weights, for the IR's interpreter."""
    lowered = compiled.inference
    b = Builder()
    outputs = [b.var(v.type, "out") for v in lowered.outputs]
    masks = [None if m is None else b.var(m.type, "mask") for m in lowered.masks]
    weights = [b.var(var.type, "w") for _, _, var in lowered.params]
    params = [(spec, w) for (_, spec, _), w in zip(lowered.params, weights)]
    loss = total_loss(b, losses, compiled.graph.output_names, outputs, params, masks=masks)
    inputs = [*outputs, *loss.targets, *loss.sample_weights, *(m for m in masks if m is not None), *weights]
    return b.program(inputs, [loss.total, *(loss.per_output if len(outputs) > 1 else [])])
