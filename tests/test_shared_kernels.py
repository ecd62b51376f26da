"""Layers of one kind and size share their compiled time loop: the emitter defines a function once for every
chunk of work that differs only in the names of its arguments and variables (`Emitter.define`), so a stack
of identical layers compiles one loop, not one a layer. The shared loop must still compute each layer's
own numbers: the NumPy backend, which shares nothing, is the reference."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_cpu_backend import assert_close

from kdsl.backends.cpu.emitter import renamed
from kdsl.lang import load
from kdsl.pipeline import compile_model

STACK = """
model Stack(x: f32[batch, 16, 5]) -> y {
    y = x |> lstm(8, return_sequences=true) |> lstm(8, return_sequences=true) |> lstm(8, return_sequences=true)
          |> lstm(8) |> dense(3, activation=softmax)
}
train Stack { loss = sparse_categorical_crossentropy }
"""


@pytest.fixture(scope="module")
def pair():
    graph = load(STACK, "stack.kd").models["Stack"]
    compiled, reference = compile_model(graph, target="cpu"), compile_model(graph, target="numpy")
    compiled.weights = [w.copy() for w in reference.weights]
    return reference, compiled


def _time_loops(source: str, entry: str) -> set[str]:
    """The compiled functions of `entry` with a time loop."""
    blocks = re.split(r"\n(?=@numba|def )", source)
    loops = {
        re.match(r"def (\w+)", block).group(1)
        for block in blocks
        if block.startswith(f"def _{entry}_") and re.search(r"^    for step_\d+ in", block, re.M)
    }
    return loops


def test_identical_layers_share_one_time_loop(pair):
    _, compiled = pair
    with open(compiled.runner.module.__file__) as file:
        source = file.read()
    # four layers: three return their sequences and run one loop, the last returns its last state and runs another
    assert len(_time_loops(source, "forward")) == 2
    assert len(_time_loops(source, "train_step")) == 4  # the same forwards, and backwards


def test_renaming_keeps_what_differs():
    body = ["    buf3_7 = buf3[lo_1:hi_2]", "    for i_9 in range(64):", "        buf3_7[0, i_9] = a2_w[i_9]"]
    same = ["    buf5_3 = buf5[lo_4:hi_8]", "    for i_2 in range(64):", "        buf5_3[0, i_2] = a6_v[i_2]"]
    assert renamed(["buf3", "lo_1", "hi_2", "a2_w"], body, False) == renamed(
        ["buf5", "lo_4", "hi_8", "a6_v"], same, False
    )
    other_size = [line.replace("64", "32") for line in same]
    assert renamed(["buf3", "lo_1", "hi_2", "a2_w"], body, False) != renamed(
        ["buf5", "lo_4", "hi_8", "a6_v"], other_size, False
    )
    swapped = ["buf5_3 = buf5[hi_8:lo_4]", *same[1:]]  # the same names in other roles
    assert renamed(["buf3", "lo_1", "hi_2", "a2_w"], body, False) != renamed(
        ["buf5", "lo_4", "hi_8", "a6_v"], swapped, False
    )


@pytest.mark.parametrize("batch", [1, 3, 20])  # one thread, columns split, rows split
def test_shared_loops_give_each_layer_its_numbers(pair, batch):
    reference, compiled = pair
    rng = np.random.default_rng(batch)
    x, labels = rng.standard_normal((batch, 16, 5)).astype(np.float32), rng.integers(0, 3, batch).astype(np.int32)
    assert_close(reference.forward(x)[0], compiled.forward(x)[0])
    loss_reference, loss_compiled = reference.train_step([x], [labels]), compiled.train_step([x], [labels])
    assert loss_compiled == pytest.approx(loss_reference, rel=1e-5)
    for expected, actual in zip(reference.grads, compiled.grads, strict=True):
        assert_close(expected, actual)
