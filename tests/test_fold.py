"""Folding an embedding into the recurrent input projection (`kdsl.passes.fold`).

The folded forward pass must equal the NumPy backend's unfolded one on both of its paths:
fewer ids than table rows (rows picked, then projected) and more (the table projected, then
its rows picked). Which path runs depends on the batch, so hypothesis draws batches on both
sides of the vocabulary size.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cpu_backend import assert_close

from kdsl.backends.compiled import compile_model
from kdsl.ir.ops import OPS
from kdsl.lang import load
from kdsl.passes.fold import fold_gather_projections

VOCAB, STEPS = 9, 3  # a batch of 3 or more holds more ids than the table has rows

TEXT = f"""
model Text(ids: i32[batch, {STEPS}]) -> y {{
    y = embedding(ids, {VOCAB}, 4) |> lstm(5) |> dense(2, activation=softmax)
}}
train Text {{ loss = sparse_categorical_crossentropy }}
"""


@pytest.fixture(scope="module")
def graph():
    return load(TEXT, "text.kd").models["Text"]


@pytest.fixture(scope="module")
def pair(graph):
    reference = compile_model(graph, target="numpy", training=False)
    compiled = compile_model(graph, target="cpu", training=False, parallel=True)
    compiled.weights = [w.copy() for w in reference.weights]
    return reference, compiled


def _ops(program) -> list[str]:
    return [e.op.name for e in program.eqns]


def test_forward_folds_the_embedding_and_training_keeps_it(graph):
    model = compile_model(graph, target="numpy")
    forward = fold_gather_projections(model.inference.program)
    assert "gather_matmul" in _ops(forward) and "gather" not in _ops(forward)
    # the training step reads the gathered rows again for the input kernel's gradient
    step = fold_gather_projections(model.training.program)
    assert "gather_matmul" not in _ops(step) and "gather" in _ops(step)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_folded_forward_matches_numpy(pair, batch, seed):
    reference, compiled = pair
    ids = np.random.default_rng(seed).integers(0, VOCAB, (batch, STEPS)).astype(np.int32)
    (expected,), (actual,) = reference.forward(ids), compiled.forward(ids)
    assert_close(expected, actual)


@pytest.mark.parametrize("batch", [1, 6])  # both paths
def test_folded_forward_refuses_ids_out_of_range(pair, batch):
    _, compiled = pair
    ids = np.zeros((batch, STEPS), np.int32)
    ids[-1, -1] = VOCAB
    with pytest.raises(IndexError, match="out of range"):
        compiled.forward(ids)


def test_gather_matmul_reference_is_the_product_of_the_picked_rows():
    rng = np.random.default_rng(0)
    table, weight = rng.standard_normal((6, 3)), rng.standard_normal((3, 4))
    ids = rng.integers(0, 6, (2, 5))
    (folded,) = OPS["gather_matmul"].reference({"perm": (1, 0)}, table, ids, weight)
    np.testing.assert_allclose(folded, np.transpose(table[ids], (1, 0, 2)) @ weight, rtol=1e-12)
