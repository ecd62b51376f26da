"""Matrix products on the device: cuBLAS through CuPy where it is installed, else a tiled Numba kernel.

cuBLAS is the choice whenever it can be had: its kernels use tensor cores, tile sizes tuned
per shape and double buffering, and reach most of the GPU's peak, which a hand-written Numba
kernel does not come near (a shared-memory tiled kernel like the one below runs at a few
percent of it on large products). CuPy is the well-kept Python binding of cuBLAS; it takes
Numba's device arrays without a copy through `__cuda_array_interface__`, and both use the
legacy default stream, so its GEMMs are ordered with our kernels. The tiled kernel is the
fallback when CuPy is missing, and what Numba's simulator runs (CuPy needs a real GPU).
The ratio has yet to be measured on a GPU: `benchmarks/` is where it belongs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np
from numba import cuda, float32

import kdsl
from kdsl.backends.cpu.support.cache_keys import key_by_package
from kdsl.backends.cuda.launch import gemm_grid, gemm_tile, simulated

key_by_package(kdsl.__file__)

TILE = gemm_tile()


@cuda.jit(cache=True)
def gemm_tiled(a, b, c, transpose_a, transpose_b):
    """c = op(a) @ op(b), op transposing when asked; each block computes TILE x TILE tiles of c in turn."""
    left = cuda.shared.array((TILE, TILE), float32)
    right = cuda.shared.array((TILE, TILE), float32)
    tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
    rows, columns = c.shape
    inner = a.shape[0] if transpose_a else a.shape[1]
    across = (columns + TILE - 1) // TILE
    tiles = across * ((rows + TILE - 1) // TILE)
    for tile in range(cuda.blockIdx.x, tiles, cuda.gridDim.x):  # the same count for all threads of a block
        row, column = (tile // across) * TILE + ty, (tile % across) * TILE + tx
        total = float32(0.0)
        for start in range(0, inner, TILE):
            k = start + tx
            if row < rows and k < inner:
                left[ty, tx] = a[k, row] if transpose_a else a[row, k]
            else:
                left[ty, tx] = float32(0.0)
            k = start + ty
            if column < columns and k < inner:
                right[ty, tx] = b[column, k] if transpose_b else b[k, column]
            else:
                right[ty, tx] = float32(0.0)
            cuda.syncthreads()
            for j in range(TILE):
                total += left[ty, j] * right[j, tx]
            cuda.syncthreads()
        if row < rows and column < columns:
            c[row, column] = total


def _cupy():
    if simulated():
        return None
    try:
        import cupy
    except ImportError:
        return None
    return cupy


CUPY = _cupy()


def gemm(a, b, c, transpose_a: bool = False, transpose_b: bool = False) -> Callable[[], None]:
    """A call computing c[M, N] = op(a) @ op(b) on 2-D device arrays, as often as it is made; the operands
    are wrapped once, so a call is one launch."""
    if CUPY is not None:
        x, y, out = CUPY.asarray(a), CUPY.asarray(b), CUPY.asarray(c)
        x, y = x.T if transpose_a else x, y.T if transpose_b else y
        return partial(CUPY.matmul, x, y, out=out)
    launch = gemm_tiled[gemm_grid(c.shape[0], c.shape[1], TILE)]
    return partial(launch, a, b, c, np.bool_(transpose_a), np.bool_(transpose_b))
