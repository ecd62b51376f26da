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

import functools

import numba
import numpy as np

SMALL_PRODUCT = 1_000_000  # the largest M·N·K OpenBLAS multiplies unpacked
SMALL_KERNEL_ARCHITECTURES = ("SkylakeX", "Cooperlake", "SapphireRapids")  # OpenBLAS's AVX-512 kernels, which have it
SUPPORT_FUNCTIONS = ("column_blocks", "product_in_blocks")


@functools.cache
def small_product_limit() -> int:
    """SMALL_PRODUCT when every BLAS loaded is an OpenBLAS with the unpacked kernel; else 0: no blocks.

    Elsewhere blocks would only add calls and copies: it is the kernel that makes them pay.
    """
    try:
        import scipy.linalg  # noqa: F401  (the BLAS Numba calls)
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return 0
    blas = [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]
    unpacked = all(lib.internal_api == "openblas" and lib.architecture in SMALL_KERNEL_ARCHITECTURES for lib in blas)
    return SMALL_PRODUCT if blas and unpacked else 0


@numba.njit(cache=True)
def column_blocks(w, rows, limit):
    """`w` (K×N) as contiguous column blocks (count, K, width) for products with `rows` rows.

    The width is the widest divisor of N, a multiple of 8, that keeps rows·K·width within
    `limit` (`small_product_limit()`); when all of N fits, or no such width exists, one
    block: `w` itself.
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
def product_in_blocks(a, blocks, out, scratch):
    """out = a·w, with w given as `column_blocks`; `scratch` holds one block's (rows, width) result."""
    if blocks.shape[0] == 1:
        np.dot(a, blocks[0], out)
        return
    width = blocks.shape[2]
    for b in range(blocks.shape[0]):
        np.dot(a, blocks[b], scratch)
        out[:, b * width : (b + 1) * width] = scratch
