"""The CPU target's fast paths against the NumPy backend, which takes none of them.

- An embedding folded into the recurrent input projection and, in a training step, into its
  gradients (`kdsl.passes.fold`): fewer ids than table rows take one path (rows picked, then
  projected), more take the other (the table projected, then its rows picked by the time loop at
  each step; the gradient summed by id, then multiplied); which one runs depends on the batch.
- Products inside time loops by weights prepared before the loop (`kdsl.backends.cpu.support.loop_products`):
  where BLAS has an unpacked small-matrix kernel and the register tiles are 256 bits wide, only a product
  of more than SMALL_PRODUCT
  multiply-adds is cut into column blocks, so a batch of 64 is needed here, forward (h·U) and
  backward (dz·Uᵀ); elsewhere every step multiplies by the weight packed into panels, in register tiles.
  Both preparations are also checked directly, whichever this machine's BLAS picks.
- Products through the newest OpenBLAS loaded (`kdsl.backends.cpu.support.blas`), in every layout of their
  operands, whether this machine has one (then views BLAS reads in place go to it) or not.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cpu_backend import assert_close

from kdsl.backends.cpu.support import entry
from kdsl.backends.cpu.support.blas import NO_TRANSPOSE, TRANSPOSE, blas_layout, fastest_sgemm, product, sgemm_found
from kdsl.backends.cpu.support.loop_products import (
    SMALL_PRODUCT,
    column_blocks,
    panel_product,
    prepare_weight,
    step_product,
    step_scratch,
)
from kdsl.backends.cpu.support.register_tiles import MAX_TILE_ROWS, PANEL, TILE_PANELS
from kdsl.ir.ops import OPS
from kdsl.lang import load
from kdsl.passes.fold import fold_gather_projections
from kdsl.pipeline import compile_model

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
    monkeypatch.setattr(entry, "product_limit", lambda rows: limit)
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


# strided operands go to np.dot, which Numba compiles with a copy and a warning saying so
STRIDED_OK = pytest.mark.filterwarnings("ignore::numba.core.errors.NumbaPerformanceWarning")


@STRIDED_OK
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


def views(rng, rows: int, cols: int) -> dict[str, tuple[np.ndarray, tuple[int, int]]]:
    """A rows×cols float32 matrix in the layouts a kernel may hand `product`, each with how BLAS reads it."""
    base = rng.standard_normal((2 * rows + 1, 2 * cols + 1)).astype(np.float32)
    width = 2 * cols + 1
    return {
        "contiguous": (np.ascontiguousarray(base[:rows, :cols]), (NO_TRANSPOSE, max(cols, 1))),
        "rows of a wider matrix": (base[1 : rows + 1, 1 : cols + 1], (NO_TRANSPOSE, width)),
        "transposed": (rng.standard_normal((cols, rows)).astype(np.float32).T, (TRANSPOSE, max(rows, 1))),
        "strided columns": (base[:rows, : 2 * cols : 2], (NO_TRANSPOSE, width) if cols == 1 else (0, 0)),
        "reversed rows": (base[rows - 1 :: -1, :cols] if rows else base[:0, :cols], (0, 0)),
        "broadcast row": (np.broadcast_to(base[0, :cols], (rows, cols)), (0, 0)),
    }


@STRIDED_OK
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 40), st.integers(1, 20), st.integers(1, 20), st.integers(0, 5), st.integers(0, 5))
def test_product_multiplies_like_numpy_in_every_layout(k, m, n, left, right):
    """BLAS reads its operands in place where their layout allows, and every layout multiplies right."""
    rng = np.random.default_rng(k * 400 + m * 20 + n)
    (a, a_layout), (b, b_layout) = list(views(rng, m, k).values())[left], list(views(rng, k, n).values())[right]
    for x, expected in ((a, a_layout), (b, b_layout)):
        if x.shape[0] > 1 and x.shape[1] > 1:  # a single row or column has more ways to be read
            assert blas_layout(x) == expected
    out = np.full((m, n), np.nan, np.float32)  # always with contiguous rows, as the kernels give it
    product(a, b, out)
    np.testing.assert_allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)


def test_product_keeps_nans():
    a, b, out = np.ones((5, 300), np.float32), np.ones((3, 300), np.float32).T, np.zeros((5, 3), np.float32)
    b[4, 1] = np.nan
    product(a, b, out)
    assert np.isnan(out[:, 1]).all() and np.isfinite(out[:, [0, 2]]).all()


@numba.njit
def found() -> int:
    return sgemm_found()


def test_products_go_to_blas_where_one_is_found():
    """`kdsl_sgemm_found` answers for the OpenBLAS this process bound, or for none."""
    assert found() == (fastest_sgemm() is not None)


def test_products_of_one_or_two_rows_take_the_register_tiles_whatever_the_blas(monkeypatch):
    """And in 512 bits, every product does."""
    from kdsl.backends.cpu.support import loop_products

    monkeypatch.setattr(loop_products, "small_product_limit", lambda: SMALL_PRODUCT)
    monkeypatch.setattr(loop_products, "VECTOR_BITS", 256)
    assert [loop_products.product_limit(rows) for rows in (1, 2, 3, 64)] == [0, 0, SMALL_PRODUCT, SMALL_PRODUCT]
    monkeypatch.setattr(loop_products, "VECTOR_BITS", 512)
    assert [loop_products.product_limit(rows) for rows in (1, 2, 3, 64)] == [0, 0, 0, 0]
    monkeypatch.setattr(loop_products, "small_product_limit", lambda: 0)
    monkeypatch.setattr(loop_products, "VECTOR_BITS", 256)
    assert loop_products.product_limit(64) == 0
