"""The CPU target's fast paths against the NumPy backend, which takes none of them.

- An embedding folded into the recurrent input projection and, in a training step, into its
  gradients (`kdsl.passes.fold`): fewer ids than table rows take one path (rows picked, then
  projected), more take the other (the table projected, then its rows picked by the time loop at
  each step; the gradient summed by id, then multiplied); which one runs depends on the batch.
- Products inside time loops by weights prepared before the loop (`kdsl.backends.cpu.loop_products`):
  where BLAS has an unpacked small-matrix kernel, only a product of more than SMALL_PRODUCT
  multiply-adds is cut into column blocks, so a batch of 64 is needed here, forward (h·U) and
  backward (dz·Uᵀ); elsewhere every step multiplies by the weight packed into panels, in register tiles.
  Both preparations are also checked directly, whichever this machine's BLAS picks.
- Weight gradients through the newest OpenBLAS loaded (`kdsl.backends.cpu.blas`), with the `np.dot`
  stand-in for its symbol checked too, whichever this machine binds.
"""

from __future__ import annotations

import ctypes

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cpu_backend import assert_close

from kdsl.backends.compiled import compile_model
from kdsl.backends.cpu.blas import CBLAS_SGEMM, LONG_SUM, product_tn, sgemm_by_np_dot
from kdsl.backends.cpu.loop_products import (
    SMALL_PRODUCT,
    column_blocks,
    panel_product,
    prepare_weight,
    step_product,
    step_scratch,
)
from kdsl.backends.cpu.register_tiles import MAX_TILE_ROWS, PANEL, TILE_PANELS
from kdsl.ir.ops import OPS
from kdsl.lang import load
from kdsl.passes.fold import fold_gather_projections

# a batch of 3 or more holds more ids than the table has rows; the length of time is left open, so
# the time loops count as long ones, which cut their weights into blocks
VOCAB, STEPS, UNITS = 9, 3, 128

TEXT = f"""
model Text(ids: i32[batch, time]) -> y {{
    y = embedding(ids, {VOCAB}, 4) |> lstm({UNITS}) |> dense(2, activation=softmax)
}}
train Text {{ loss = sparse_categorical_crossentropy }}
"""


@pytest.fixture(scope="module")
def graph():
    return load(TEXT, "text.kd").models["Text"]


@pytest.fixture(scope="module")
def pair(graph):
    reference = compile_model(graph, target="numpy")
    compiled = compile_model(graph, target="cpu", parallel=True)
    compiled.weights = [w.copy() for w in reference.weights]
    return reference, compiled


def _ops(program) -> list[str]:
    return [e.op.name for e in program.eqns]


def _ids(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, VOCAB, (batch, STEPS)).astype(np.int32)


def test_the_embedding_folds_into_the_projection_and_its_gradients(graph):
    model = compile_model(graph, target="numpy")
    forward = fold_gather_projections(model.inference.program)
    assert "gather_matmul" in _ops(forward) and "gather" not in _ops(forward)
    step = fold_gather_projections(model.training.program)
    assert {"gather_matmul", "gather_matmul_grads"} <= set(_ops(step))
    # only the time loop's cell reads the projection, element by element: the loop picks its rows
    assert all(e.attrs.get("in_loop") for p in (forward, step) for e in p.eqns if e.op.name == "gather_matmul")
    assert not {"gather", "gather_grad", "transpose"} & set(_ops(step))
    # the input kernel's gradient is folded; the recurrent kernel's and the dense layer's stay
    assert _ops(step).count("matmul_tn") == _ops(model.training.program).count("matmul_tn") - 1


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_folded_forward_matches_numpy(pair, batch, seed):
    reference, compiled = pair
    (expected,), (actual,) = reference.forward(_ids(batch, seed)), compiled.forward(_ids(batch, seed))
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


def test_gather_matmul_grads_reference_is_the_gradient_of_the_picked_rows():
    rng = np.random.default_rng(0)
    table, weight = rng.standard_normal((6, 3)), rng.standard_normal((3, 4))
    ids = rng.integers(0, 6, (2, 5))
    g = rng.standard_normal((5, 2, 4))  # time-major, as the folded product's output
    dw, dtable = OPS["gather_matmul_grads"].reference({"perm": (1, 0)}, table, ids, weight, g)
    rows = np.transpose(table[ids], (1, 0, 2))
    expected_dtable = np.zeros_like(table)
    np.add.at(expected_dtable, ids, np.transpose(g @ weight.T, (1, 0, 2)))
    np.testing.assert_allclose(dw, np.einsum("tbk,tbn->kn", rows, g), rtol=1e-12)
    np.testing.assert_allclose(dtable, expected_dtable, rtol=1e-12)


@pytest.mark.parametrize("batch", [2, 5])  # fewer ids than table rows, and more: both orders of work
def test_folded_train_step_matches_numpy(pair, batch):
    reference, compiled = pair
    ids, labels = _ids(batch, 2), np.arange(batch, dtype=np.int32) % 2
    assert len(np.unique(ids)) < ids.size  # a repeated id: its rows' gradients must be summed
    loss_reference, loss_compiled = reference.train_step([ids], [labels]), compiled.train_step([ids], [labels])
    assert loss_compiled == pytest.approx(loss_reference, rel=1e-5)
    for expected, actual in zip(reference.grads, compiled.grads, strict=True):
        assert_close(expected, actual)


@pytest.mark.parametrize("limit", [0, SMALL_PRODUCT])  # the transposed weight, and column blocks
def test_prepared_train_step_matches_numpy(pair, monkeypatch, limit):
    """Both preparations of a time loop's weights, whichever this machine's BLAS would pick."""
    reference, compiled = pair
    monkeypatch.setattr(compiled.module, "small_product_limit", lambda: limit)
    batch = 64  # 32 rows a thread: h·U is 32x128·128x512, dz·Uᵀ 32x512·512x128, both over the limit
    assert (batch // 2) * UNITS * 4 * UNITS > SMALL_PRODUCT
    ids, labels = _ids(batch, 1), np.arange(batch, dtype=np.int32) % 2
    loss_reference, loss_compiled = reference.train_step([ids], [labels]), compiled.train_step([ids], [labels])
    assert loss_compiled == pytest.approx(loss_reference, rel=1e-5)
    for expected, actual in zip(reference.grads, compiled.grads, strict=True):
        assert_close(expected, actual)
    assert_close(reference.forward(ids)[0], compiled.forward(ids)[0])


@pytest.mark.parametrize(("rows", "k", "n"), [(16, 256, 512), (32, 512, 128), (2, 8, 24)])
def test_column_blocks_multiply_like_the_whole_weight(rows, k, n):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n), np.float32)
    blocks = column_blocks(w, rows, SMALL_PRODUCT)
    count, _, width = blocks.shape
    assert count * width == n and (count == 1 or rows * k * width <= SMALL_PRODUCT)
    assert count > 1 or rows * k * n <= SMALL_PRODUCT or n % 8


def test_panels_without_the_unpacked_kernel():
    """With no small-matrix kernel to run them (limit 0), a weight is not cut into blocks but packed into
    panels of PANEL columns along K, the last one padded with zeros, from either orientation."""
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert column_blocks(w, 16, 0).shape == (1, 3, 4)
    for prepared in (prepare_weight(w, False, 16, 0), prepare_weight(np.ascontiguousarray(w.T), True, 16, 0)):
        assert prepared.shape == (1, 3, PANEL)
        np.testing.assert_array_equal(prepared[0, :, :4], w)
        assert not prepared[0, :, 4:].any()


@settings(max_examples=60, deadline=None)
@given(
    st.integers(0, 3 * MAX_TILE_ROWS + 1),
    st.integers(1, 40),
    st.integers(1, (max(TILE_PANELS) + 1) * PANEL + 3),
    st.booleans(),
    st.sampled_from([0, 200, SMALL_PRODUCT]),
    st.booleans(),
)
def test_step_products_multiply_like_numpy(rows, k, n, transposed, limit, strided):
    """Every preparation (blocks of any width, one block, panels) and every register tile: each count of rows
    and of panels, a padded last panel, a left operand whose rows are not contiguous."""
    rng = np.random.default_rng(rows * 10000 + k * 100 + n)
    a = rng.standard_normal((rows, 2 * k if strided else k)).astype(np.float32)[:, :: 2 if strided else 1]
    w = rng.standard_normal((n, k) if transposed else (k, n)).astype(np.float32)
    prepared = prepare_weight(w, transposed, rows, limit)
    scratch = step_scratch(prepared, rows, limit)
    out = np.full((rows, n), np.nan, np.float32)
    step_product(a, prepared, scratch, limit, out)
    expected = a.astype(np.float64) @ (w.T if transposed else w)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_panel_products_keep_nans():
    """A NaN in a row must show in that row's outputs and in no other: a diverging step still shows as NaN.
    An output whose rows are not contiguous is refused: the tiles write whole vectors."""
    rows, k, n = 7, 8, 2 * PANEL + 5
    a, w = np.ones((rows, k), np.float32), np.ones((k, n), np.float32)
    a[5, 3] = np.nan
    prepared = prepare_weight(w, False, rows, 0)
    out = np.zeros((rows, n), np.float32)
    step_product(a, prepared, step_scratch(prepared, rows, 0), 0, out)
    assert np.isnan(out[5]).all() and np.isfinite(np.delete(out, 5, axis=0)).all()
    with pytest.raises(ValueError, match="contiguous"):
        panel_product(a, prepared, step_scratch(prepared, rows, 0), np.zeros((rows, 2 * n), np.float32)[:, ::2], 0, 1)


def views(rng, k: int, cols: int) -> dict[str, np.ndarray]:
    """A K×cols float32 matrix as BLAS reads it (rows contiguous) and in the layouts it cannot."""
    base = rng.standard_normal((2 * k + 1, 2 * cols + 1)).astype(np.float32)
    return {
        "contiguous": np.ascontiguousarray(base[:k, :cols]),
        "rows of a wider matrix": base[1 : k + 1, 1 : cols + 1],
        "strided columns": base[:k, : 2 * cols : 2],
        "reversed rows": base[k - 1 :: -1, :cols] if k else base[:0, :cols],
        "broadcast row": np.broadcast_to(base[0, :cols], (k, cols)),
    }


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 40) | st.integers(LONG_SUM, LONG_SUM + 40), st.integers(1, 20), st.integers(1, 20),
       st.integers(0, 4), st.integers(0, 4))  # fmt: skip
def test_product_tn_multiplies_like_numpy_in_every_layout(k, m, n, left, right):
    """It runs a long sum split across threads in the layouts BLAS reads, and leaves every other call alone."""
    rng = np.random.default_rng(k * 400 + m * 20 + n)
    a, b = list(views(rng, k, m).values())[left], list(views(rng, k, n).values())[right]
    for threads in (1, 2):
        out = np.full((m, n), np.nan, np.float32)  # always contiguous, as the kernels give it
        ran = product_tn(a, b, out, threads)
        readable = left < 2 or (left == 2 and m == 1), right < 2 or (right == 2 and n == 1)  # a column: any stride
        assert ran == (threads == 2 and k >= LONG_SUM and all(readable))
        if ran:
            np.testing.assert_allclose(out, a.astype(np.float64).T @ b, rtol=1e-4, atol=1e-4)
        else:
            assert np.isnan(out).all()


def test_product_tn_keeps_nans():
    a, b, out = np.ones((LONG_SUM, 2), np.float32), np.ones((LONG_SUM, 3), np.float32), np.zeros((2, 3), np.float32)
    b[4, 1] = np.nan
    assert product_tn(a, b, out, 2)
    assert np.isnan(out[:, 1]).all() and np.isfinite(out[:, [0, 2]]).all()


def test_the_np_dot_stand_in_computes_the_call_product_tn_makes():
    """The symbol's stand-in, called as C calls `cblas_sgemm`: c = aᵀ·b on the leading columns of wider rows."""
    stand_in = numba.cfunc(CBLAS_SGEMM, cache=True)(sgemm_by_np_dot)
    i32, i64, f32, p = ctypes.c_int32, ctypes.c_int64, ctypes.c_float, ctypes.c_void_p
    call = ctypes.CFUNCTYPE(None, i32, i32, i32, i64, i64, i64, f32, p, i64, p, i64, f32, p, i64)(stand_in.address)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((7, 10), np.float32), rng.standard_normal((7, 9), np.float32)
    out = np.zeros((4, 8), np.float32)
    call(101, 112, 111, 4, 5, 7, 1.0, a.ctypes.data, 10, b.ctypes.data, 9, 0.0, out.ctypes.data, 8)
    np.testing.assert_allclose(out[:, :5], a[:, :4].T @ b[:, :5], rtol=1e-5, atol=1e-5)
    assert not out[:, 5:].any()
