"""A model's weights in Keras 3's HDF5 layout (`model.weights.h5`, `.weights.h5` files) and in the legacy `.h5`
layout, read into and written from the model's own arrays.

Every dataset is checked for its layer, count, float type and shape from the file's metadata before its data is
read, so a damaged or foreign file is refused without reading more than the model's weights.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from kdsl.errors import KdslError
from kdsl.ir.graph import Graph, Nested
from kdsl.keras_files.layout import layer_paths, vars_path, weight_groups


def h5py_module() -> Any:
    """h5py, or a clear error saying how to get it."""
    try:
        import h5py
    except ImportError:
        raise KdslError("Keras's HDF5 files need the h5py package",
                        hint="pip install 'kdsl[keras]' (or pip install h5py)") from None  # fmt: skip
    return h5py


def open_h5(data: bytes | str, source: str) -> Any:
    """An HDF5 file opened for reading, from its bytes or its path; anything else is refused naming `source`."""
    h5py = h5py_module()
    try:
        return h5py.File(io.BytesIO(data) if isinstance(data, bytes) else data, "r")
    except (OSError, ValueError) as error:
        raise KdslError(f"{source}: not an HDF5 file, or damaged ({error})") from None


def weight_paths(graph: Graph) -> dict[str, str]:
    """Each layer's group in a Keras 3 weights file, by kdsl name; a nested model's layers (`encoder/lstm`) are in
    its own group (`layers/sequential/layers/lstm`)."""
    ops = graph.top_layers()
    paths = {}
    for op, path in zip(ops, layer_paths(op.keras if isinstance(op, Nested) else op.kind.keras for op in ops)):
        if isinstance(op, Nested):
            paths.update({f"{op.name}/{name}": f"{path}/{inner}" for name, inner in weight_paths(op.graph).items()})
        else:
            paths[op.name] = path
    return paths


def member(group: Any, path: str) -> Any:
    """The object at `path` below `group`, following only links inside the file: HDF5's external and soft links
    could reach other files, and are not followed. None when there is nothing there."""
    h5py = h5py_module()
    for name in path.split("/"):
        if not isinstance(group, h5py.Group) or not isinstance(group.get(name, getlink=True), h5py.HardLink):
            return None
        group = group[name]
    return group


def _checked(dataset: Any, shape: tuple[int, ...], where: str, source: str) -> np.ndarray:
    h5py = h5py_module()
    if not isinstance(dataset, h5py.Dataset):
        raise KdslError(f"{source}: `{where}` is not a weight")
    if dataset.external or dataset.is_virtual:
        raise KdslError(f"{source}: `{where}` keeps its data outside the file, which kdsl does not read")
    if dataset.dtype.kind != "f" or tuple(dataset.shape) != tuple(shape):
        raise KdslError(f"{source}: `{where}` is {dataset.dtype}{list(dataset.shape)}, the model needs "
                        f"float32{list(shape)}")  # fmt: skip
    return np.asarray(dataset[()], dtype=np.float32)


def read_keras_weights(h5: Any, graph: Graph, paths: dict[str, str], source: str) -> dict[str, np.ndarray]:
    """The weights of a Keras 3 weights file by kdsl name (`layer/weight`), each layer's from its group in `paths`
    (`weight_paths` for a file of this model, or those of the configuration the file came with)."""
    h5py = h5py_module()
    weights = {}
    for layer in graph.layers():
        params = layer.params or []
        if not params:
            continue
        for group, indices in weight_groups(layer.kind, layer.config, [p.name for p in params]):
            where = vars_path(paths[layer.name], group)
            found = member(h5, where)
            if not isinstance(found, h5py.Group):
                raise KdslError(f"{source}: no weights for layer `{layer.name}` (expected at `{where}`)")
            if len(found) != len(indices):
                raise KdslError(f"{source}: `{where}` holds {len(found)} weights, layer `{layer.name}` has "
                                f"{len(indices)} there")  # fmt: skip
            for position, index in enumerate(indices):
                if str(position) not in found:
                    raise KdslError(f"{source}: `{where}` has no weight `{position}`")
                param = params[index]
                weights[f"{layer.name}/{param.name}"] = _checked(
                    member(found, str(position)), param.shape, f"{where}/{position}", source
                )
    return weights


def read_optimizer_variables(h5: Any, source: str) -> list[np.ndarray]:
    """The optimizer's variables Keras 3 saved (`optimizer/vars/0`, `1`, ...), in order; none where it saved none
    (a model never trained)."""
    h5py = h5py_module()
    group = member(h5, "optimizer/vars")
    if not isinstance(group, h5py.Group):
        return []
    variables = []
    for index in range(len(group)):
        dataset = member(group, str(index))
        where = f"optimizer/vars/{index}"
        if not isinstance(dataset, h5py.Dataset) or dataset.dtype.kind not in "fiu":
            raise KdslError(f"{source}: `{where}` is not an optimizer variable")
        if dataset.external or dataset.is_virtual:
            raise KdslError(f"{source}: `{where}` keeps its data outside the file, which kdsl does not read")
        variables.append(np.asarray(dataset[()]))
    return variables


def write_keras_weights(
    h5: Any, graph: Graph, weights: dict[str, np.ndarray], optimizer: tuple[str, list[np.ndarray]] | None
) -> None:
    """Write `weights` (by kdsl name) as Keras 3 does, and the optimizer's name and variables when given."""
    h5.create_group("vars").attrs["name"] = graph.name
    if optimizer is not None:
        group = h5.create_group("optimizer/vars")
        group.attrs["name"] = optimizer[0]
        for index, variable in enumerate(optimizer[1]):
            group.create_dataset(str(index), data=variable)
    paths = weight_paths(graph)
    for layer in graph.layers():
        h5.create_group(vars_path(paths[layer.name], "")).attrs["name"] = layer.name.rsplit("/", 1)[-1]
        params = layer.params or []
        for group, indices in weight_groups(layer.kind, layer.config, [p.name for p in params]):
            target = h5.require_group(vars_path(paths[layer.name], group))
            for position, index in enumerate(indices):
                target.create_dataset(str(position), data=weights[f"{layer.name}/{params[index].name}"])


def read_legacy_weights(h5: Any, graph: Graph, source: str) -> dict[str, np.ndarray]:
    """The weights of a legacy `.h5` file's `model_weights` group: each layer's under its name, in the order of the
    group's `weight_names`."""
    h5py = h5py_module()
    root = member(h5, "model_weights")
    root = h5 if root is None else root
    weights = {}
    for layer in graph.layers():
        params = layer.params or []
        if not params:
            continue
        group = member(root, layer.name)
        names = _names(group.attrs.get("weight_names") if isinstance(group, h5py.Group) else None)
        if names is None:
            raise KdslError(f"{source}: no weights for layer `{layer.name}`")
        if len(names) != len(params):
            raise KdslError(f"{source}: layer `{layer.name}` has {len(names)} weights there, the model's has "
                            f"{len(params)}")  # fmt: skip
        for name, param in zip(names, params):
            weights[f"{layer.name}/{param.name}"] = _checked(member(group, name), param.shape, f"{layer.name}/{name}",
                                                             source)  # fmt: skip
    return weights


def _names(attribute: Any) -> list[str] | None:
    if attribute is None:
        return None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in np.asarray(attribute).reshape(-1)]
