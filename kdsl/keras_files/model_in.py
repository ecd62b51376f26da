"""A Keras model's configuration made into a kdsl model: a Sequential stack, or a functional graph rebuilt from each
layer's `inbound_nodes` (shared layers called again, several inputs and outputs, initial states)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdsl.errors import KdslError
from kdsl.keras_files.layers_in import Refusal, check_origin, make_layer, refuse
from kdsl.keras_files.layout import layer_paths
from kdsl.layers import Input, KerasTensor, Layer
from kdsl.naming import is_valid_name

if TYPE_CHECKING:
    from kdsl.model import Model

MODEL_CLASSES = ("Sequential", "Functional", "Model")
MODEL_MODULES = (None, "keras", "keras.models", "keras.src.models.functional", "keras.src.models.sequential",
                 "keras.src.models.model")  # fmt: skip
INPUT_DTYPES = {"float32": "float32", "int32": "int32", "int64": "int32"}  # token ids are read as int32
CALL_ARGUMENTS = {"training": (None, False), "mask": (None,)}  # call arguments kdsl takes at these values only


@dataclass
class Imported:
    """The kdsl model; for each of its layers, the group of `model.weights.h5` that holds its weights; for a
    partial conversion, what was left out and why; and the optimizer's variables Keras saved, if any."""

    model: Model
    paths: dict[str, str]
    left_out: list[str] = field(default_factory=list)
    optimizer_variables: list = field(default_factory=list)


def build_model(
    serialized: Any, model_class: type[Model], partial: bool = False, sequential_class: type[Model] | None = None
) -> Imported:
    """The kdsl model (made by `model_class`, kdsl's functional `Model`, or for a Sequential model by
    `sequential_class` where given, so that its `layers` are a Sequential's, as Keras loads it) of a serialized
    Keras model (`config.json`, or a legacy file's `model_config`).

    With `partial`, a layer kdsl refuses and every layer after it are left out instead, and the model ends where
    they began: its outputs are the original outputs still computed and the tensors the left-out layers read.
    Nothing is guessed; `left_out` says what was dropped and why."""
    if not _is_model(serialized):
        found = serialized.get("class_name") if isinstance(serialized, dict) else type(serialized).__name__
        raise KdslError(f"not a Keras Sequential or functional model's configuration (its class is {found!r})",
                        hint="kdsl reads Keras's own Sequential and functional models, not subclasses")  # fmt: skip
    config = serialized.get("config")
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
        raise KdslError("the model's configuration has no list of `layers`")
    name = config.get("name") or "model"
    if not is_valid_name(name):
        raise KdslError(f"model name {name!r} is not a name kdsl can use", hint="rename the model in Keras")
    entries = [_checked_entry(entry) for entry in config["layers"]]
    layers_ = [entry for entry in entries if entry["class_name"] != "InputLayer"]
    paths = dict(zip((_name(entry) for entry in layers_), layer_paths(e["class_name"] for e in layers_)))
    left_out: list[str] | None = [] if partial else None
    nested: dict[str, Imported] = {}
    if serialized["class_name"] == "Sequential":
        model = _sequential(name, config, entries, _Context(model_class, left_out, nested, sequential_class))
    else:
        model = _functional(name, config, entries, _Context(model_class, left_out, nested, sequential_class))
    for outer, inner in nested.items():  # a nested model's layers are `outer/layer` in kdsl, its group's in Keras
        paths.update({f"{outer}/{layer}": f"{paths[outer]}/{path}" for layer, path in inner.paths.items()})
    return Imported(model, paths, left_out or [])


@dataclass
class _Context:
    """What building one model needs: the class that makes models, where a partial conversion notes what it leaves
    out (None when converting it all), and the models nested in it, by name."""

    model_class: type[Model]
    left_out: list[str] | None
    nested: dict[str, Imported]
    sequential_class: type[Model] | None = None


def _layer(entry: dict, context: _Context) -> Layer | Model:
    """The kdsl layer of a serialized layer, or the kdsl model of a model nested as a layer."""
    if entry["class_name"] in MODEL_CLASSES:
        nested = build_model(entry, context.model_class, sequential_class=context.sequential_class)
        context.nested[_name(entry)] = nested
        return context.nested[_name(entry)].model
    return make_layer(entry, _name(entry))


def _refused(error: Refusal, left_out: list[str] | None) -> None:
    """Note a refusal for a partial conversion; otherwise it stands."""
    if left_out is None:
        raise error
    left_out.append(error.message + (f" ({error.hint})" if error.hint else ""))


def _is_model(serialized: Any) -> bool:
    """Whether a serialized object is one of Keras's own Sequential or functional models."""
    return (
        isinstance(serialized, dict)
        and serialized.get("class_name") in MODEL_CLASSES
        and serialized.get("module") in MODEL_MODULES
        and serialized.get("registered_name") in (None, serialized["class_name"])
    )


def _checked_entry(entry: Any) -> dict:
    name = entry.get("config", {}).get("name") if isinstance(entry, dict) else None
    class_name = entry["class_name"] if _is_model(entry) else check_origin(entry, str(name))
    if not is_valid_name(name):
        raise KdslError(f"layer name {name!r} ({class_name}) is not a name kdsl can use",
                        hint="names are letters, digits and underscores; rename the layer in Keras")  # fmt: skip
    return entry


def _name(entry: dict) -> str:
    return entry["config"]["name"]


def _input(entry: dict, several: bool = False) -> KerasTensor:
    """The model input of an InputLayer; with `several` inputs, each variable dimension is its own (`title_d1`)."""
    config, name = entry["config"], _name(entry)
    for flag in ("sparse", "ragged", "optional"):
        if config.get(flag):
            raise refuse(name, "InputLayer", f"`{flag}` inputs are not supported")
    shape = config.get("batch_shape", config.get("batch_input_shape"))
    if not isinstance(shape, list) or not shape:
        raise KdslError(f"input `{name}` has no `batch_shape`")
    dtype = config.get("dtype") or "float32"
    dtype = dtype.get("config", {}).get("name") if isinstance(dtype, dict) else dtype
    if dtype not in INPUT_DTYPES:
        raise refuse(name, "InputLayer", f"dtype {dtype!r}: kdsl's inputs are float32 or int32 (token ids)")
    try:
        dims = [f"{name}_d{i}" if d is None and several else d for i, d in enumerate(shape[1:], start=1)]
        return Input(shape=dims, dtype=INPUT_DTYPES[dtype], name=name, batch_size=shape[0])  # fixed: stateful RNNs
    except KdslError as error:
        raise refuse(name, "InputLayer", error.message, error.hint) from None


def _sequential(name: str, config: dict, entries: list[dict], context: _Context) -> Model:
    if entries and entries[0]["class_name"] == "InputLayer":
        inputs = _input(entries[0])
        entries = entries[1:]
    elif isinstance(config.get("build_input_shape"), list):
        inputs = _input({"config": {"name": "input_layer", "batch_shape": config["build_input_shape"]}})
    else:
        raise KdslError(f"Sequential model `{name}` was saved before it was built: it has no input shape",
                        hint="build it in Keras (give it an Input, or call it on data) before saving")  # fmt: skip
    x, called = inputs, []
    for position, entry in enumerate(entries):
        try:
            called.append(_layer(entry, context))
            outputs = _call(called[-1], [x], None, entry)
            if len(outputs) != 1:
                raise refuse(_name(entry), entry["class_name"], f"gives {len(outputs)} outputs, a Sequential layer one")
        except Refusal as error:
            _refused(error, context.left_out)
            context.left_out += [f"layer `{_name(later)}` ({later['class_name']}): after a layer left out"
                         for later in entries[position + 1 :]]  # fmt: skip
            called = called[:position]
            break
        x = outputs[0]
    if x is inputs:
        raise KdslError(f"model `{name}`: no layer could be converted", hint="; ".join(context.left_out or []))
    if context.sequential_class is not None:
        return context.sequential_class([inputs, *called], name=name)
    return context.model_class(inputs, x, name=name)


def _functional(name: str, config: dict, entries: list[dict], context: _Context) -> Model:
    tensors: dict[tuple[str, int], list[KerasTensor] | None] = {}  # None: a call left out
    pending: list[tuple[dict, Layer | Model | None, int, dict]] = []
    frontier: list[KerasTensor] = []  # what the calls left out read
    several = sum(entry["class_name"] == "InputLayer" for entry in entries) > 1
    for entry in entries:
        if entry["class_name"] == "InputLayer":
            tensors[(_name(entry), 0)] = [_input(entry, several)]
            continue
        try:
            layer: Layer | Model | None = _layer(entry, context)
        except Refusal as error:
            _refused(error, context.left_out)
            layer = None
        nodes = entry.get("inbound_nodes")
        if not isinstance(nodes, list):
            raise KdslError(f"layer `{_name(entry)}` has no `inbound_nodes`")
        pending += [(entry, layer, index, node) for index, node in enumerate(nodes)]
    while pending:  # a shared layer's later calls may wait on layers listed after it
        waiting = []
        for entry, layer, index, node in pending:
            args, kwargs = _node(entry, node)
            history = _tensors(args) + _tensors(kwargs.get("initial_state"))
            if any(tuple(h[:2]) not in tensors for h in history):
                waiting.append((entry, layer, index, node))
                continue
            key = (_name(entry), index)
            if any(tensors[tuple(h[:2])] is None for h in history):
                tensors[key] = None
                continue
            inputs = _resolve(args, tensors, entry)
            states = _nested(kwargs.get("initial_state"), tensors, entry)
            if layer is not None:
                try:
                    tensors[key] = _call(layer, inputs, states, entry)
                    continue
                except Refusal as error:
                    _refused(error, context.left_out)
            tensors[key] = None
            frontier += [t for t in inputs + _flat(states or []) if t.call is not None]
        if len(waiting) == len(pending):
            raise KdslError(f"the calls of layer `{_name(waiting[0][0])}` read tensors no layer makes")
        pending = waiting
    inputs = [_lookup(spec, tensors, "input") for spec in _specs(config.get("input_layers"))]
    specs = _specs(config.get("output_layers"))
    outputs = [_lookup(spec, tensors, "output") for spec in specs if tensors.get(tuple(spec[:2]), []) is not None]
    if context.left_out is not None:
        skipped = [f"layers not converted: {', '.join(sorted({k[0] for k, v in tensors.items() if v is None}))}"]
        context.left_out += skipped if any(v is None for v in tensors.values()) else []
        outputs += [t for t in frontier if all(t is not o for o in outputs)]
        outputs = [t for i, t in enumerate(outputs) if all(t is not o for o in outputs[:i])]
    if not outputs:
        raise KdslError(f"model `{name}`: no output could be converted", hint="; ".join(context.left_out or []))
    return context.model_class(inputs, outputs, name=name)


def _node(entry: dict, node: Any) -> tuple[Any, dict]:
    """A call's arguments: the tensors it reads and its keyword arguments (initial states), others refused."""
    if not isinstance(node, dict) or not isinstance(node.get("args"), list):
        raise refuse(_name(entry), entry["class_name"], "its `inbound_nodes` are not in Keras 3's form",
                     hint="load and save the model with Keras 3 first")  # fmt: skip
    kwargs = node.get("kwargs") or {}
    for key, value in kwargs.items():
        if key != "initial_state" and value not in CALL_ARGUMENTS.get(key, ()):
            raise refuse(_name(entry), entry["class_name"], f"it is called with `{key}={value!r}`"[:200])
    if len(node["args"]) != 1:
        raise refuse(_name(entry), entry["class_name"], f"it is called with {len(node['args'])} positional arguments")
    return node["args"][0], kwargs


def _tensors(value: Any) -> list[list]:
    """The `keras_history` of every tensor in a call argument (a tensor, or a list of them)."""
    if value is None:
        return []
    if isinstance(value, list):
        return [h for item in value for h in _tensors(item)]
    config = value.get("config") if isinstance(value, dict) else None
    history = config.get("keras_history") if isinstance(config, dict) else None
    if value.get("class_name") != "__keras_tensor__" or not isinstance(history, list) or len(history) != 3:
        raise KdslError(f"expected a Keras tensor in a layer call, got {value!r}"[:200])
    return [history]


def _resolve(value: Any, tensors: dict, entry: dict) -> list[KerasTensor] | None:
    if value is None:
        return None
    return [_lookup(history, tensors, f"layer `{_name(entry)}`'s input") for history in _tensors(value)]


def _nested(value: Any, tensors: dict, entry: dict) -> Any:
    """The tensors of a call argument in its nesting: an RNN over several cells takes each cell's states as a list."""
    if value is None:
        return None
    if isinstance(value, list):
        return [_nested(item, tensors, entry) for item in value]
    return _resolve(value, tensors, entry)[0]


def _lookup(spec: Any, tensors: dict, what: str) -> KerasTensor:
    if not isinstance(spec, list) or len(spec) != 3:
        raise KdslError(f"a model's {what} is not given as [layer, node, tensor]: {spec!r}"[:200])
    name, node, index = spec
    found = tensors.get((name, node))
    if found is None or not isinstance(index, int) or not 0 <= index < len(found):
        raise KdslError(f"the model's {what} names tensor {index} of call {node} of `{name}`, which is not there")
    return found[index]


def _specs(value: Any) -> list:
    """`input_layers` / `output_layers`: one [layer, node, tensor] or a list of them."""
    if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
        return [value]
    if isinstance(value, list):
        return value
    if isinstance(value, dict):  # a dict of them, by name, in Keras's order
        return list(value.values())
    raise KdslError("the model names no `input_layers` or `output_layers`")


def _call(layer: Layer | Model, inputs: list[KerasTensor], states: list | None, entry: dict) -> list:
    """The flat list of a layer call's outputs, as `keras_history` indexes them."""
    argument = inputs if len(inputs) > 1 else inputs[0]
    try:
        outputs = layer(argument, initial_state=states) if states else layer(argument)
    except KdslError as error:
        raise refuse(_name(entry), entry["class_name"], error.message, error.hint) from None
    return _flat(outputs)


def _flat(value: Any) -> list[KerasTensor]:
    if isinstance(value, list | tuple):
        return [t for item in value for t in _flat(item)]
    return [value]
