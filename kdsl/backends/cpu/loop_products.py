"""Products inside time loops, with the weight prepared once before the loop instead of at every step.

A time loop multiplies a few rows (its chunk of the batch) by the same weight at every step.
BLAS packs the weight into its own layout at every call, and on a few rows that costs as much
as the product: on a Zen 3 core, OpenBLAS's AVX2 kernel ran (16×256)·(256×1024) at 50 GFLOP/s
and (4×128)·(128×512) at 5. So the weight is prepared before the loop (`prepare_weight`):

- Where BLAS multiplies small matrices without packing them (OpenBLAS's AVX-512 builds, up to
  M·N·K = 100³), it is cut into column blocks under that size (`column_blocks`). On a Zen 4
  core, (16×256)·(256×192) ran at 116 GFLOP/s and (8×256)·(256×1024) whole at 35.
- Elsewhere it is transposed, so that each output is the dot product of two contiguous rows.
  `product_nt` computes them four rows by three columns at a time, the sums in registers: on
  the Zen 3 core, 66–71 GFLOP/s from 8 to 48 rows by (256×1020), where a 1024³ GEMM reaches
  72, and 15 µs for (4×128)·(128×512). A single row stays with BLAS, whose matrix-vector product is faster.

This module's source is copied into generated modules: it needs only NumPy and Numba.
"""

import functools

import numba
import numpy as np

from kdsl.backends.cpu.blas import loaded_blas

SMALL_PRODUCT = 1_000_000  # the largest M·N·K OpenBLAS multiplies unpacked
SMALL_KERNEL_ARCHITECTURES = ("SkylakeX", "Cooperlake", "SapphireRapids")  # OpenBLAS's AVX-512 kernels, which have it
SUPPORT_FUNCTIONS = ("prepare_weight", "step_scratch", "transposed_copy", "column_blocks", "step_product", "product_nt")


@functools.cache
def small_product_limit() -> int:
    """SMALL_PRODUCT when every BLAS loaded is an OpenBLAS with the unpacked kernel; else 0: no blocks."""
    blas = loaded_blas()
    if not blas:
        return 0
    unpacked = all(lib.internal_api == "openblas" and lib.architecture in SMALL_KERNEL_ARCHITECTURES for lib in blas)
    return SMALL_PRODUCT if blas and unpacked else 0


@numba.njit(cache=True)
def prepare_weight(w, transposed, rows, limit):
    """The right operand of a·w (a·wᵀ if `transposed`), prepared for `step_product` with up to `rows` rows.

    With a `limit` (`small_product_limit()`): column blocks (count, K, width). Without: the
    operand transposed, (1, N, K).
    """
    if limit:
        return column_blocks(transposed_copy(w) if transposed else w, rows, limit)
    rows_of_wt = w if transposed else transposed_copy(w)
    return rows_of_wt.reshape((1, *rows_of_wt.shape))


@numba.njit(cache=True)
def step_scratch(prepared, rows, limit):
    """What `step_product` needs beside a prepared weight for `rows` rows: room for one column block."""
    return np.empty((rows, prepared.shape[2]) if limit else (0, 0), np.float32)


@numba.njit(cache=True)
def transposed_copy(w):
    """A contiguous copy of wᵀ, in 8×8 tiles: 0.45 ms for 256×1024 against 1.1 ms element by element."""
    k, n = w.shape
    out = np.empty((n, k), np.float32)
    for jb in range(0, n, 8):
        for ib in range(0, k, 8):
            for j in range(jb, min(jb + 8, n)):
                for i in range(ib, min(ib + 8, k)):
                    out[j, i] = w[i, j]
    return out


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
    for b in range(n // width):  # element by element: slice assignments cost Numba 5 s to compile
        for i in range(k):
            for j in range(width):
                blocks[b, i, j] = w[i, b * width + j]
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
        for i in range(a.shape[0]):
            for j in range(width):
                out[i, b * width + j] = scratch[i, j]


# reassociation lets LLVM vectorize the sums along K (fast-math without "no NaNs": a NaN must show)
@numba.njit(cache=True, fastmath={"nsz", "arcp", "contract", "afn", "reassoc"})
def product_nt(a, wt, out):
    """out = a·wtᵀ (a: M×K, wt: N×K), each output a dot product of two rows, 4×3 of them at a time.

    Twelve sums in registers, seven rows read per step along K: on the Zen 3 core 4×3 tiles ran
    at 66–71 GFLOP/s for 8 to 48 rows, 2×4 tiles at 52–62 and 3×4 (spilling) at 35–40.
    """
    m, k = a.shape
    n = wt.shape[0]
    m4, n3 = m - m % 4, n - n % 3
    for j in range(0, n3, 3):
        w0, w1, w2 = wt[j], wt[j + 1], wt[j + 2]
        for i in range(0, m4, 4):
            a0, a1, a2, a3 = a[i], a[i + 1], a[i + 2], a[i + 3]
            s00 = s01 = s02 = s10 = s11 = s12 = s20 = s21 = s22 = s30 = s31 = s32 = np.float32(0)
            for p in range(k):
                v0, v1, v2 = w0[p], w1[p], w2[p]
                x = a0[p]
                s00 += x * v0
                s01 += x * v1
                s02 += x * v2
                x = a1[p]
                s10 += x * v0
                s11 += x * v1
                s12 += x * v2
                x = a2[p]
                s20 += x * v0
                s21 += x * v1
                s22 += x * v2
                x = a3[p]
                s30 += x * v0
                s31 += x * v1
                s32 += x * v2
            out[i, j], out[i, j + 1], out[i, j + 2] = s00, s01, s02
            out[i + 1, j], out[i + 1, j + 1], out[i + 1, j + 2] = s10, s11, s12
            out[i + 2, j], out[i + 2, j + 1], out[i + 2, j + 2] = s20, s21, s22
            out[i + 3, j], out[i + 3, j + 1], out[i + 3, j + 2] = s30, s31, s32
        for i in range(m4, m):
            a0 = a[i]
            s00 = s01 = s02 = np.float32(0)
            for p in range(k):
                x = a0[p]
                s00 += x * w0[p]
                s01 += x * w1[p]
                s02 += x * w2[p]
            out[i, j], out[i, j + 1], out[i, j + 2] = s00, s01, s02
    for j in range(n3, n):
        for i in range(m):
            s = np.float32(0)
            for p in range(k):
                s += a[i, p] * wt[j, p]
            out[i, j] = s
