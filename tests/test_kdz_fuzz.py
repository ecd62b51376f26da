"""A `.kdz` kdsl did not write, or one damaged, is refused with a KdslError naming the file: never a crash, and
never an array of the wrong shape reaching a kernel (a 1-element optimizer slot once made the update loop write
past its weight). Hypothesis mutates a real saved model: truncations, flipped bytes, members swapped, dropped or
replaced, JSON fields deleted or retyped, arrays reshaped, retyped or renamed."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kdsl
from kdsl.errors import KdslError
from kdsl.files import npz_bytes
from kdsl.lang import load

SOURCE = """model C(x: f32[batch, 4]) -> y {
    y = x |> dense(5, activation=relu) |> batch_normalization() |> dense(3, activation=softmax)
}
train C { loss = sparse_categorical_crossentropy
          optimizer = adam(learning_rate=0.01, amsgrad=true) }"""
MEMBERS = ("model.kd", "state.json", "weights.npz", "optimizer.npz")
X = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> bytes:
    model = kdsl.Model.from_graph(load(SOURCE, "c.kd").models["C"])
    model.compile(target="numpy")
    model.fit(X, np.arange(6) % 3, verbose=0)
    path = tmp_path_factory.mktemp("kdz") / "c.kdz"
    model.save(path)
    return path.read_bytes()


def members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def archive(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as written:
        for name, data in files.items():
            written.writestr(name, data)
    return out.getvalue()


def json_edit(draw, state: dict) -> dict:
    """Delete a field or give it a value of another type, somewhere in the state."""
    path, node = [], state
    while isinstance(node, dict) and node and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(node)))
        path.append(key)
        node = node[key]
    if not path:
        path.append(draw(st.sampled_from(sorted(state))))
    parent = state
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        del parent[path[-1]]
    else:
        nested = [[[[[[[]]]]]]] * 3
        parent[path[-1]] = draw(st.sampled_from([None, "x", -1, 1e300, True, [], {}, nested, 2**70]))
    return state


def array_edit(draw, data: bytes) -> bytes:
    """Reshape, retype or rename one array of an .npz."""
    with np.load(io.BytesIO(data)) as npz:
        arrays = {key: npz[key] for key in npz.files}
    if not arrays:
        return data
    key = draw(st.sampled_from(sorted(arrays)))
    change = draw(st.sampled_from(["one element", "flat", "int", "float64", "rename", "bigger"]))
    value = arrays.pop(key)
    if change == "one element":
        arrays[key] = value.reshape(-1)[:1]
    elif change == "flat":
        arrays[key] = value.reshape(-1)
    elif change == "int":
        arrays[key] = value.astype(np.int64)
    elif change == "float64":
        arrays[key] = value.astype(np.float64)  # a float of another width: loads, as float32
    elif change == "rename":
        arrays[key + "_x"] = value
    else:
        arrays[key] = np.zeros((value.size + 7,), np.float32)
    return npz_bytes(arrays)


@st.composite
def damaged(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "drop", "swap", "garbage", "json", "array"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    files = members(data)
    if kind == "drop":
        files.pop(draw(st.sampled_from(MEMBERS)))
    elif kind == "swap":
        a, b = draw(st.permutations(MEMBERS))[:2]
        files[a], files[b] = files[b], files[a]
    elif kind == "garbage":
        files[draw(st.sampled_from(MEMBERS))] = draw(st.binary(max_size=64))
    elif kind == "json":
        files["state.json"] = json.dumps(json_edit(draw, json.loads(files["state.json"]))).encode()
    else:
        member = draw(st.sampled_from(["weights.npz", "optimizer.npz"]))
        files[member] = array_edit(draw, files[member])
    return archive(files)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_damaged_kdz_is_refused_or_loads_sound(saved, tmp_path, data):
    path = tmp_path / "damaged.kdz"
    path.write_bytes(data.draw(damaged(saved)))
    try:
        model = kdsl.load_model(path)
    except KdslError as error:
        assert str(path) in str(error)
        return
    model.predict(X)  # whatever loaded is whole: it runs, and trains
    model.fit(X, np.arange(6) % 3, verbose=0)


def test_a_zip_bomb_member_is_refused_before_it_is_read(saved, tmp_path):
    files = members(saved)
    files["state.json"] = b"{" + b" " * (64 << 20) + b"}"  # 64 MiB of spaces, a few kB compressed
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as written:
        for name, content in files.items():
            written.writestr(name, content)
    path = tmp_path / "bomb.kdz"
    path.write_bytes(out.getvalue())
    assert path.stat().st_size < 1 << 20
    with pytest.raises(KdslError, match="would unpack to"):
        kdsl.load_model(path)


@pytest.mark.parametrize(
    "content", [b"", b"not a zip", None, {"dense/kernel": np.zeros(3, np.float32)}, {"dense/kernel": np.array(["a"])}]
)
def test_a_bad_weights_file_is_refused_with_its_name(tmp_path, content):
    x = kdsl.Input(shape=(4,))
    model = kdsl.Model(x, kdsl.layers.Dense(2)(x))
    path = tmp_path / "w.npz"
    if content is None:
        path = tmp_path / "missing.npz"
    elif isinstance(content, dict):
        path.write_bytes(npz_bytes(content))
    else:
        path.write_bytes(content)
    with pytest.raises(KdslError, match=str(path)):
        model.load_weights(path)
