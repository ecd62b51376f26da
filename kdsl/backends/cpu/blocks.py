"""Products inside time loops, in column blocks small enough for BLAS's unpacked kernel.

OpenBLAS multiplies small matrices (M·N·K up to 100³ on its SkylakeX and Zen kernels)
without packing them first. On this machine (AVX-512, one thread) a (16×256)·(256×192)
product ran at 116 GFLOP/s, and a (16×256)·(256×256) one, just over the limit, at 54;
(8×256)·(256×1024), a recurrent step of 8 rows, at 35. A time loop multiplies its few
rows by the same weight at every step, so the weight is cut once, before the loop, into
blocks of columns that each stay under the limit, and each step runs one small product
per block. This module's source is copied into generated modules: it needs only NumPy
and Numba.
"""

import numba
import numpy as np

SMALL_PRODUCT = 1_000_000  # the largest M·N·K OpenBLAS multiplies unpacked
SUPPORT_FUNCTIONS = ("column_blocks", "product_in_blocks")


@numba.njit(cache=True)
def column_blocks(w, rows):
    """`w` (K×N) as contiguous column blocks (count, K, width) for products with `rows` rows.

    The width is the widest divisor of N, a multiple of 8, that keeps rows·K·width within
    SMALL_PRODUCT; when all of N fits, or no such width exists, one block: `w` itself.
    """
    k, n = w.shape
    width = n
    if rows * k * n > SMALL_PRODUCT:
        for d in range(n - n % 8, 7, -8):
            if n % d == 0 and rows * k * d <= SMALL_PRODUCT:
                width = d
                break
    if width == n:
        return w.reshape((1, k, n))
    blocks = np.empty((n // width, k, width), np.float32)
    for b in range(n // width):
        blocks[b] = w[:, b * width : (b + 1) * width]
    return blocks


@numba.njit(cache=True)
def product_in_blocks(a, blocks, out, scratch):
    """out = a·w, with w given as `column_blocks`; `scratch` holds one block's (rows, width) result."""
    if blocks.shape[0] == 1:
        np.dot(a, blocks[0], out)
        return
    width = blocks.shape[2]
    for b in range(blocks.shape[0]):
        np.dot(a, blocks[b], scratch)
        out[:, b * width : (b + 1) * width] = scratch
