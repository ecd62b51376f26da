"""A Keras layer's configuration, as `config.json` holds it, made into the kdsl layer with the same arguments.

Only Keras's own layer classes are known, by name, from a fixed list; nothing a file names is imported or run. An
argument kdsl does not honour is passed on to the kdsl layer, whose catalogue refuses it with its reason; the
arguments Keras writes at their neutral values (`kernel_constraint: null`, `stateful: false`...) are dropped.
"""

from __future__ import annotations

import re
from typing import Any

from kdsl import layers
from kdsl.catalogue.args import REQUIRED
from kdsl.errors import KdslError, KdslUnsupportedError
from kdsl.keras_files.values import float32_number, function_spec

LAYER_CLASSES: dict[str, type[layers.Layer]] = {
    cls.kind.keras: cls
    for cls in (
        layers.Dense, layers.Activation, layers.Flatten, layers.Reshape, layers.Dropout, layers.BatchNormalization,
        layers.Embedding, layers.SimpleRNN, layers.LSTM, layers.GRU, layers.Bidirectional, layers.TimeDistributed,
        layers.Concatenate, layers.Add, layers.Multiply, layers.RepeatVector,
    )
}  # fmt: skip
CELL_CLASSES: dict[str, type[layers.Cell]] = {
    "SimpleRNNCell": layers.SimpleRNNCell,
    "LSTMCell": layers.LSTMCell,
    "GRUCell": layers.GRUCell,
}
NOT_LAYERS = {  # why kdsl will not take some layers, beyond not having them
    "Lambda": "a Lambda layer holds Python code, which kdsl never runs",
    "TFSMLayer": "a TensorFlow SavedModel is a program, which kdsl never runs",
}
KERAS_MODULES = (None, "keras.layers", "keras.src.layers")  # where Keras's own layers are serialized from

# arguments Keras writes whatever the model, which mean nothing while they have these values
NEUTRAL = {
    "activity_regularizer": None, "kernel_constraint": None, "recurrent_constraint": None, "bias_constraint": None,
    "embeddings_constraint": None, "beta_constraint": None, "gamma_constraint": None, "quantization_config": None,
    "stateful": False, "unroll": False, "zero_output_for_mask": False, "time_major": False, "use_cudnn": "auto",
    "sparse": False, "synchronized": False, "renorm": False, "noise_shape": None, "lora_rank": None,
    "lora_alpha": None, "input_length": None, "seed": None, "data_format": "channels_last",
}  # fmt: skip
# arguments that mean something only when another is set (which kdsl refuses then)
DEPENDS_ON = {"renorm_clipping": "renorm", "renorm_momentum": "renorm", "lora_alpha": "lora_rank"}
FUNCTION_ARGUMENTS = re.compile(r"_(initializer|regularizer)$")


class Refusal(KdslUnsupportedError):
    """What kdsl cannot take from a Keras file, naming the layer, its class and the reason."""


def refuse(name: str, class_name: str, reason: str, hint: str | None = None) -> Refusal:
    return Refusal(f"layer `{name}` ({class_name}): {reason}", hint=hint)


def check_origin(entry: dict, name: str) -> str:
    """The class name of a serialized layer, refused unless it is one of Keras's own."""
    if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
        raise KdslError(f"layer `{name}`: not a serialized Keras layer (no `class_name`)")
    class_name = entry["class_name"]
    module, registered = entry.get("module"), entry.get("registered_name")
    if module not in KERAS_MODULES or registered not in (None, class_name):
        raise refuse(name, class_name, f"a custom object (`{registered or module}`) is not Keras's own",
                     hint="kdsl builds only Keras's built-in layers; no code in a file is run")  # fmt: skip
    return class_name


def make_layer(entry: dict, name: str | None = None) -> layers.Layer:
    """The kdsl layer a serialized Keras layer describes (`name` None for a layer inside a wrapper)."""
    config = entry.get("config") if isinstance(entry, dict) else None
    shown = name or (config.get("name") if isinstance(config, dict) else None) or "?"
    class_name = check_origin(entry, shown)
    if not isinstance(config, dict):
        raise KdslError(f"layer `{shown}` ({class_name}): its `config` is not a mapping")
    if class_name == "RNN":
        return _rnn(config, name, shown)
    cls = LAYER_CLASSES.get(class_name)
    if cls is None:
        raise refuse(shown, class_name, NOT_LAYERS.get(class_name, "kdsl has no such layer"),
                     hint=f"kdsl's layers: {', '.join(LAYER_CLASSES)}, RNN")  # fmt: skip
    arguments = arguments_of(config, shown, class_name)
    if class_name in ("Bidirectional", "TimeDistributed"):
        arguments["layer"] = make_layer(arguments["layer"])
    leading = _leading(cls.kind, arguments)
    return _built(lambda: cls(*leading, name=name, **arguments), shown, class_name)


def _leading(kind, arguments: dict[str, Any]) -> list[Any]:
    """The required leading arguments, taken out of `arguments` to go by position (as `Embedding(50, 8)`: kdsl's
    layers read a keyword `input_dim` as Keras's input-shape shorthand)."""
    leading = []
    for arg in kind.args:
        if not arg.positional or arg.default is not REQUIRED or arg.name not in arguments:
            break
        leading.append(arguments.pop(arg.name))
    return leading


def arguments_of(config: dict, name: str, class_name: str) -> dict[str, Any]:
    """Keras's arguments as kdsl's layers take them: functions as `FnSpec`s, neutral settings dropped."""
    arguments: dict[str, Any] = {}
    for key, value in config.items():
        if key == "name" or (key in DEPENDS_ON and not config.get(DEPENDS_ON[key])):
            continue
        if key in NEUTRAL and value == NEUTRAL[key]:
            continue
        arguments[key] = _value(key, value, name, class_name)
    if class_name == "Bidirectional":
        _check_backward_layer(arguments, name)
        arguments["layer"] = _without_zeroed_output(arguments.get("layer"))
    return arguments


def _without_zeroed_output(layer: Any) -> Any:
    """Keras's Bidirectional sets its layer's `zero_output_for_mask` to `return_sequences`, zeroing the masked steps
    of a sequence it returns, as kdsl's Bidirectional does: the setting is left out as kdsl's own."""
    config = layer.get("config") if isinstance(layer, dict) else None
    if isinstance(config, dict) and config.get("zero_output_for_mask") == config.get("return_sequences"):
        return {**layer, "config": {k: v for k, v in config.items() if k != "zero_output_for_mask"}}
    return layer


def _value(key: str, value: Any, name: str, class_name: str) -> Any:
    if key == "dtype":
        return _dtype(value, name, class_name)
    if FUNCTION_ARGUMENTS.search(key) and value is not None:
        try:
            return function_spec(value)
        except KdslError as error:
            raise refuse(name, class_name, f"`{key}`: {error.message}", error.hint) from None
    if key == "activation" and not isinstance(value, str | None):
        raise refuse(name, class_name, "a custom activation is not Keras's own",
                     hint="kdsl's activations are named, like `relu`")  # fmt: skip
    if isinstance(value, float):
        return float32_number(value)
    if isinstance(value, list) and key != "layer":
        return tuple(value)
    return value


def _dtype(value: Any, name: str, class_name: str) -> str:
    """Keras's dtype policy, which kdsl honours only as float32."""
    policy = value.get("config", {}).get("name") if isinstance(value, dict) else value
    if policy not in (None, "float32"):
        raise refuse(name, class_name, f"dtype policy {policy!r}: kdsl computes in float32")
    return "float32"


def _check_backward_layer(arguments: dict[str, Any], name: str) -> None:
    """Keras writes the backward layer of every Bidirectional; kdsl takes it only as `layer`'s backward copy."""
    backward = arguments.pop("backward_layer", None)
    layer = arguments.get("layer")
    if backward is None:
        return
    same = (
        isinstance(backward, dict) and isinstance(layer, dict) and backward.get("class_name") == layer.get("class_name")
    )
    if same:
        forward_config, backward_config = dict(layer.get("config") or {}), dict(backward.get("config") or {})
        for config in (forward_config, backward_config):
            config.pop("name", None)
        backward_config["go_backwards"] = not backward_config.get("go_backwards")
        same = _without_ids(forward_config) == _without_ids(backward_config)
    if not same:
        raise refuse(name, "Bidirectional", "its `backward_layer` is not a backward copy of `layer`",
                     hint="kdsl's Bidirectional runs a copy of `layer` backwards")  # fmt: skip


def _without_ids(value: Any) -> Any:
    """A serialized value without Keras's `shared_object_id`s, which differ between equal copies."""
    if isinstance(value, dict):
        return {k: _without_ids(v) for k, v in value.items() if k != "shared_object_id"}
    if isinstance(value, list):
        return [_without_ids(v) for v in value]
    return value


def _rnn(config: dict, name: str | None, shown: str) -> layers.Layer:
    """Keras's generic RNN over one built-in cell or a stack of them."""
    arguments = arguments_of(config, shown, "RNN")
    cell = arguments.pop("cell", None)
    if isinstance(cell, dict) and cell.get("class_name") == "StackedRNNCells":
        check_origin(cell, shown)
        cells = (cell.get("config") or {}).get("cells")
        if not isinstance(cells, list):
            raise KdslError(f"layer `{shown}` (RNN): its StackedRNNCells has no list of cells")
        made: Any = [_cell(item, shown) for item in cells]
    else:
        made = _cell(cell, shown)
    return _built(lambda: layers.RNN(made, name=name, **arguments), shown, "RNN")


def _cell(entry: Any, shown: str) -> layers.Cell:
    class_name = check_origin(entry, shown)
    if class_name not in CELL_CLASSES:
        raise refuse(shown, "RNN", f"its cell `{class_name}` is not one kdsl has",
                     hint=f"kdsl's cells: {', '.join(CELL_CLASSES)}")  # fmt: skip
    arguments = arguments_of(entry.get("config") or {}, shown, class_name)
    return CELL_CLASSES[class_name](**arguments)


def _built(make, name: str, class_name: str) -> layers.Layer:
    """The layer `make` builds; kdsl's own refusal of an argument, said of the Keras layer."""
    try:
        return make()
    except Refusal:
        raise
    except KdslError as error:
        raise refuse(name, class_name, error.message, error.hint) from None
