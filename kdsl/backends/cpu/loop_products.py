"""Products inside time loops, with the weight prepared once before the loop instead of at every step.

A time loop multiplies a few rows (its chunk of the batch) by the same weight at every step.
BLAS packs the weight into its own layout at every call, and on a few rows that costs as much
as the product: on a Zen 3 core, OpenBLAS's AVX2 kernel ran (16×256)·(256×1024) at 50 GFLOP/s
and (4×128)·(128×512) at 5. So the weight is prepared before the loop (`prepare_weight`):

- Where BLAS multiplies small matrices without packing them (OpenBLAS's AVX-512 builds, up to
  M·N·K = 100³), it is cut into column blocks under that size (`column_blocks`). On a Zen 4
  core, (16×256)·(256×192) ran at 116 GFLOP/s and (8×256)·(256×1024) whole at 35.
- Elsewhere it is transposed, so that each output is the dot product of two contiguous rows.
  `product_nt` computes them two rows by four columns at a time, the eight sums in registers:
  on the Zen 3 core, 65 GFLOP/s at (16×256)·(256×1024) and 15 µs for (4×128)·(128×512), where
  a 1024³ GEMM reaches 72. A single row stays with BLAS, whose matrix-vector product is faster.

This module's source is copied into generated modules: it needs only NumPy and Numba.
"""

import functools

import numba
import numpy as np

SMALL_PRODUCT = 1_000_000  # the largest M·N·K OpenBLAS multiplies unpacked
SMALL_KERNEL_ARCHITECTURES = ("SkylakeX", "Cooperlake", "SapphireRapids")  # OpenBLAS's AVX-512 kernels, which have it
SUPPORT_FUNCTIONS = ("prepare_weight", "column_blocks", "step_product", "product_nt")


@functools.cache
def small_product_limit() -> int:
    """SMALL_PRODUCT when every BLAS loaded is an OpenBLAS with the unpacked kernel; else 0: no blocks."""
    try:
        import scipy.linalg  # noqa: F401  (the BLAS Numba calls)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return 0
    blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    unpacked = all(lib.internal_api == "openblas" and lib.architecture in SMALL_KERNEL_ARCHITECTURES for lib in blas)
    return SMALL_PRODUCT if blas and unpacked else 0


@numba.njit(cache=True)
def prepare_weight(w, transposed, rows, limit):
    """The right operand of a·w (a·wᵀ if `transposed`), prepared for `step_product` with `rows` rows.

    With a `limit` (`small_product_limit()`): column blocks (count, K, width) and a block's scratch.
    Without: the operand transposed, (1, N, K), and no scratch.
    """
    if limit:
        blocks = column_blocks(np.ascontiguousarray(w.T) if transposed else w, rows, limit)
        return blocks, np.empty((rows, blocks.shape[2]), np.float32)
    rows_of_wt = np.ascontiguousarray(w) if transposed else np.ascontiguousarray(w.T)
    return rows_of_wt.reshape((1, *rows_of_wt.shape)), np.empty((0, 0), np.float32)


@numba.njit(cache=True)
def column_blocks(w, rows, limit):
    """`w` (K×N) as contiguous column blocks (count, K, width) for products with `rows` rows.

    The width is the widest divisor of N, a multiple of 8, that keeps rows·K·width within
    `limit`; when all of N fits, or no such width exists, one block: `w` itself.
    """
    k, n = w.shape
    width = n
    if rows * k * n > limit:
        for d in range(n - n % 8, 7, -8):
            if n % d == 0 and rows * k * d <= limit:
                width = d
                break
    if width == n:
        return w.reshape((1, k, n))
    blocks = np.empty((n // width, k, width), np.float32)
    for b in range(n // width):
        blocks[b] = w[:, b * width : (b + 1) * width]
    return blocks


@numba.njit(cache=True)
def step_product(a, prepared, scratch, limit, out):
    """out = a·w, with w given as `prepare_weight` made it (under the same `limit`)."""
    if not limit:
        if a.shape[0] == 1:
            np.dot(a, prepared[0].T, out)
        else:
            product_nt(a, prepared[0], out)
        return
    if prepared.shape[0] == 1:
        np.dot(a, prepared[0], out)
        return
    width = prepared.shape[2]
    for b in range(prepared.shape[0]):
        np.dot(a, prepared[b], scratch)
        out[:, b * width : (b + 1) * width] = scratch


# reassociation lets LLVM vectorize the sums along K (fast-math without "no NaNs": a NaN must show)
@numba.njit(cache=True, fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})
def product_nt(a, wt, out):
    """out = a·wtᵀ (a: M×K, wt: N×K), each output a dot product of two rows, 2×4 of them at a time."""
    m, k = a.shape
    n = wt.shape[0]
    m2, n4 = m - m % 2, n - n % 4
    for j in range(0, n4, 4):
        w0, w1, w2, w3 = wt[j], wt[j + 1], wt[j + 2], wt[j + 3]
        for i in range(0, m2, 2):
            a0, a1 = a[i], a[i + 1]
            s00 = s01 = s02 = s03 = s10 = s11 = s12 = s13 = np.float32(0)
            for p in range(k):
                x0, x1 = a0[p], a1[p]
                s00 += x0 * w0[p]
                s01 += x0 * w1[p]
                s02 += x0 * w2[p]
                s03 += x0 * w3[p]
                s10 += x1 * w0[p]
                s11 += x1 * w1[p]
                s12 += x1 * w2[p]
                s13 += x1 * w3[p]
            out[i, j], out[i, j + 1], out[i, j + 2], out[i, j + 3] = s00, s01, s02, s03
            out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2], out[i + 1, j + 3] = s10, s11, s12, s13
        if m2 < m:
            a0 = a[m2]
            s00 = s01 = s02 = s03 = np.float32(0)
            for p in range(k):
                x0 = a0[p]
                s00 += x0 * w0[p]
                s01 += x0 * w1[p]
                s02 += x0 * w2[p]
                s03 += x0 * w3[p]
            out[m2, j], out[m2, j + 1], out[m2, j + 2], out[m2, j + 3] = s00, s01, s02, s03
    for j in range(n4, n):
        for i in range(m):
            s = np.float32(0)
            for p in range(k):
                s += a[i, p] * wt[j, p]
            out[i, j] = s
