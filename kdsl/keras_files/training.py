"""Keras's compile configuration and kdsl's train block, one made from the other: optimizer with its settings,
loss (one, or one per output with its weight) and metrics.

Keras's `run_eagerly`, `jit_compile`, `steps_per_execution` and `auto_scale_loss` change how Keras runs a step,
not what it computes, and kdsl always runs compiled float32 kernels: they are not carried over.
"""

from __future__ import annotations

from typing import Any

from kdsl.catalogue.args import FnSpec
from kdsl.catalogue.functions import LOSSES, METRICS, OPTIMIZERS, FunctionTable
from kdsl.errors import KdslError, KdslUnsupportedError
from kdsl.ir.graph import LossTerm, TrainSpec
from kdsl.keras_files.values import function_spec, keras_function

OPTIMIZER_CLASSES = {"sgd": "SGD", "adam": "Adam", "rmsprop": "RMSprop", "adagrad": "Adagrad"}
RUNNING_ONLY = ("run_eagerly", "jit_compile", "steps_per_execution", "auto_scale_loss")
# settings Keras writes at values that change nothing
OPTIMIZER_NEUTRAL = {"weight_decay": None, "use_ema": False, "ema_overwrite_frequency": None, "loss_scale_factor": None,
                     "gradient_accumulation_steps": None}  # fmt: skip
# losses' and metrics' settings at values that change nothing
FUNCTION_NEUTRAL = {"reduction": "sum_over_batch_size", "axis": -1, "ignore_class": None, "dtype": None}


def train_spec(compile_config: Any, output_names: list[str]) -> TrainSpec | None:
    """The train block of a Keras compile configuration (None for a model saved without `compile`)."""
    if not compile_config:
        return None
    if not isinstance(compile_config, dict):
        raise KdslError("the model's compile configuration is not a mapping")
    known = {"optimizer", "optimizer_config", "loss", "loss_weights", "metrics", "weighted_metrics", *RUNNING_ONLY}
    unknown = sorted(set(compile_config) - known)
    if unknown:
        raise KdslUnsupportedError(f"compile argument `{unknown[0]}` is not one kdsl knows")
    if compile_config.get("weighted_metrics"):
        raise KdslUnsupportedError("compile argument `weighted_metrics` has no place in a train block",
                                   hint="pass weighted_metrics to model.compile() after loading")  # fmt: skip
    optimizer = _optimizer(compile_config.get("optimizer", compile_config.get("optimizer_config")))
    losses = _losses(compile_config.get("loss"), compile_config.get("loss_weights"), output_names)
    metrics = _metrics(compile_config.get("metrics"), output_names)
    return TrainSpec(losses, optimizer, metrics)


def _checked(table: FunctionTable, spec: FnSpec, what: str) -> FnSpec:
    try:
        return table.checked(spec)
    except KdslError as error:
        raise KdslUnsupportedError(f"compile {what}: {error.message}", hint=error.hint) from None


def _optimizer(value: Any) -> FnSpec:
    if value is None:
        return OPTIMIZERS("rmsprop")
    config = value.get("config") if isinstance(value, dict) else None
    if isinstance(config, dict):
        if isinstance(config.get("learning_rate"), dict):
            raise KdslUnsupportedError("compile optimizer: a learning-rate schedule is not read from Keras files yet",
                                       hint="compile the loaded model with the schedule")  # fmt: skip
        if not config.get("use_ema"):
            value = {**value, "config": {k: v for k, v in config.items() if k != "ema_momentum"}}
    return _function(OPTIMIZERS, value, "optimizer", OPTIMIZER_NEUTRAL)


def _function(table: FunctionTable, value: Any, what: str, neutral: dict[str, Any]) -> FnSpec:
    """A serialized Keras function as kdsl's, its name and the settings at their `neutral` values left out."""
    config = value.get("config") if isinstance(value, dict) else None
    if isinstance(config, dict):
        kept = {k: v for k, v in config.items() if k != "name" and neutral.get(k, object()) != v}
        value = {**value, "config": kept}
    try:
        spec = function_spec(value)
    except KdslError as error:
        raise KdslUnsupportedError(f"compile {what}: {error.message}", hint=error.hint) from None
    return _checked(table, spec, what)


def _per_output(value: Any, output_names: list[str], what: str) -> dict[str, Any]:
    """A setting given per output, as a dict by output name or a list in output order."""
    if isinstance(value, dict):
        unknown = [name for name in value if name not in output_names]
        if unknown:
            raise KdslUnsupportedError(f"compile {what} names output `{unknown[0]}`, the model's are {output_names}")
        return value
    if isinstance(value, list) and len(value) == len(output_names):
        return dict(zip(output_names, value))
    raise KdslUnsupportedError(f"compile {what}: expected one per output {output_names}, got {value!r}"[:200])


def _losses(loss: Any, weights: Any, output_names: list[str]) -> dict[str | None, LossTerm]:
    if loss is None:
        raise KdslUnsupportedError("the model was compiled without a loss")
    weight_of = _per_output(weights, output_names, "loss_weights") if weights is not None else {}
    if isinstance(loss, str) or (isinstance(loss, dict) and "class_name" in loss):  # one loss for every output
        spec = _function(LOSSES, loss, "loss", FUNCTION_NEUTRAL)
        if not weight_of:
            return {None: LossTerm(spec)}
        loss = [loss] * len(output_names)
    by_output = _per_output(loss, output_names, "loss")
    return {
        name: LossTerm(_function(LOSSES, by_output[name], "loss", FUNCTION_NEUTRAL), float(weight_of.get(name, 1.0)))
        for name in output_names
        if by_output.get(name) is not None
    }


def _metrics(metrics: Any, output_names: list[str]) -> dict[str | None, list[FnSpec]]:
    if not metrics:
        return {}
    if isinstance(metrics, list) and all(not isinstance(m, list) for m in metrics) and len(output_names) == 1:
        return {None: [_function(METRICS, m, "metric", FUNCTION_NEUTRAL) for m in metrics]}
    by_output = _per_output(metrics, output_names, "metrics")
    return {
        name: [_function(METRICS, m, "metric", FUNCTION_NEUTRAL) for m in (ms if isinstance(ms, list) else [ms])]
        for name, ms in by_output.items()
        if ms
    }


def compile_config(train: TrainSpec, output_names: list[str]) -> dict[str, Any]:
    """Keras's compile configuration of a train block."""
    optimizer = OPTIMIZERS.checked(train.optimizer)
    loss: Any
    if None in train.losses:
        term = train.losses[None]
        loss = keras_function(term.loss, "keras.losses") if _changed(term.loss) else term.loss.name
        weights = None if term.weight == 1.0 else [term.weight] * len(output_names)
    else:
        given = [name for name in output_names if name in train.losses]
        loss = {name: keras_function(train.losses[name].loss, "keras.losses") for name in given}
        weights = {name: train.losses[name].weight for name in given}
    metrics: Any = None
    if None in train.metrics and len(train.metrics) == 1:
        metrics = [m.name for m in train.metrics[None]]
    elif train.metrics:
        shared = [m.name for m in train.metrics.get(None, [])]
        metrics = {name: shared + [m.name for m in train.metrics.get(name, [])] for name in output_names}
    return {
        "optimizer": {
            "module": "keras.optimizers",
            "class_name": OPTIMIZER_CLASSES[optimizer.name],
            "config": {"name": optimizer.name, **{k: v for k, v in optimizer.args.items() if v is not None}},
            "registered_name": None,
        },
        "loss": loss,
        "loss_weights": weights,
        "metrics": metrics,
        "weighted_metrics": None,
        "run_eagerly": False,
        "steps_per_execution": 1,
        "jit_compile": False,
    }


def _changed(spec: FnSpec) -> dict[str, Any]:
    """A loss's arguments that differ from their defaults."""
    defaults = {arg.name: arg.default for arg in LOSSES.schemas[spec.name]}
    return {k: v for k, v in spec.args.items() if defaults.get(k) != v}
