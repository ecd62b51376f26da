"""Products inside time loops, with the weight prepared once before the loop instead of at every step.

A time loop multiplies a few rows (its chunk of the batch) by the same weight at every step.
BLAS packs the weight into its own layout at every call, and on a few rows that costs as much
as the product. So the weight is prepared before the loop (`prepare_weight`):

- Where BLAS multiplies small matrices without packing them (OpenBLAS's AVX-512 builds, up to
  M·N·K = 100³), it is cut into column blocks under that size (`column_blocks`) — for products of
  more than TILE_ROWS rows, when the register tiles are 256 bits wide: on one or two rows they read
  the weight faster, and in 512 bits they are as fast as BLAS or faster on every count of rows.
- Elsewhere it is packed into panels of PANEL columns (`pack_panels`), which the register tiles of
  `kdsl.backends.cpu.register_tiles` multiply (`panel_product`), near the GEMM rate from 8 rows on.

The rates of each way, per CPU, are in benchmarks/RESULTS.md.

Part of the support package generated modules import: it needs only NumPy and Numba.
"""

import functools

import numba
import numpy as np
from llvmlite import binding as llvm
from numba import types

from .blas import loaded_blas, product
from .register_tiles import MAX_TILE_ROWS, PANEL, TILE_PANELS, VECTOR_BITS, tile_product
from .spin import meet

__all__ = ["prepare_weight", "split_step_product", "step_product", "step_scratch"]  # what generated code names

SMALL_PRODUCT = 1_000_000  # the largest M·N·K OpenBLAS multiplies unpacked
SMALL_KERNEL_ARCHITECTURES = ("SkylakeX", "Cooperlake", "SapphireRapids")  # OpenBLAS's AVX-512 kernels, which have it


TILE_ROWS = 2  # products of at most this many rows go to the 256-bit register tiles, whatever the BLAS


def product_limit(rows: int) -> int:
    """The `limit` a time loop's products of `rows` rows take (0: register tiles), the same for the weight's
    preparation and every product of one call. The 512-bit tiles take every product."""
    return small_product_limit() if rows > TILE_ROWS and VECTOR_BITS < 512 else 0


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

    With a `limit` (`small_product_limit()`): column blocks (count, K, width). Without: panels
    (count, K, PANEL).
    """
    if limit:
        return column_blocks(transposed_copy(w) if transposed else w, rows, limit)
    return pack_panels(w, transposed)


@numba.njit(cache=True)
def step_scratch(prepared, rows, limit):
    """What `step_product` needs beside a prepared weight for `rows` rows: room for one block or panel."""
    return np.empty((rows, prepared.shape[2]), np.float32)


@numba.njit(cache=True)
def transposed_copy(w):
    """A contiguous copy of wᵀ, in 8×8 tiles: both sides stay in cache, unlike element by element."""
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
def step_product(a, prepared, scratch, limit, out, first=0, stop=-1):
    """out = a·w, with w given as `prepare_weight` made it (under the same `limit`): the columns of its
    blocks or panels `first` to `stop` (-1: the last)."""
    stop = prepared.shape[0] if stop < 0 else stop
    if not limit:
        call_panel_product(a, prepared, scratch, out, first, stop)
        return
    if prepared.shape[0] == 1:
        if first == 0 and stop == 1:
            product(a, prepared[0], out)
        return
    width = prepared.shape[2]
    for b in range(first, stop):
        product(a, prepared[b], scratch)
        for i in range(a.shape[0]):
            for j in range(width):
                out[i, b * width + j] = scratch[i, j]


@numba.njit(cache=True)
def split_step_product(a, prepared, scratch, limit, out, part, parts, progress):
    """`step_product` by `parts` threads at once, each with the same rows `a` and its share of the columns
    (see `Emitter.scan`); returns once every share is in `out`, which all of them wrote."""
    if parts == 1:
        step_product(a, prepared, scratch, limit, out)
        return
    meet(progress, part, parts)  # every part has read the last product out of `out`
    count = prepared.shape[0]
    step_product(a, prepared, scratch, limit, out, part * count // parts, (part + 1) * count // parts)
    meet(progress, part, parts)


@numba.njit(cache=True)
def pack_panels(w, transposed):
    """w (K×N), or wᵀ if `transposed` (w N×K), as panels (count, K, PANEL) of its columns, the last one
    padded with zeros: what `tile_product` reads, PANEL floats at a time along K.

    Full panels are copied PANEL floats at a time, reading w row by row, not element by element down its
    columns.
    """
    k, n = (w.shape[1], w.shape[0]) if transposed else w.shape
    full = n // PANEL
    panels = np.empty((-(-n // PANEL), k, PANEL), np.float32)
    if transposed:
        for b in range(full):
            for p in range(k):
                for j in range(PANEL):
                    panels[b, p, j] = w[b * PANEL + j, p]
    else:
        for p in range(k):
            for b in range(full):
                for j in range(PANEL):
                    panels[b, p, j] = w[p, b * PANEL + j]
    if full < panels.shape[0]:  # the last panel: what is left of w's columns, then zeros
        for p in range(k):
            for j in range(n - full * PANEL):
                panels[full, p, j] = w[full * PANEL + j, p] if transposed else w[p, full * PANEL + j]
            for j in range(n - full * PANEL, PANEL):
                panels[full, p, j] = 0
    return panels


@numba.njit(cache=True)
def panel_product(a, panels, scratch, out, first, stop):
    """out = a·w for the columns of panels `first` to `stop`, w packed by `pack_panels`; `scratch` (a's rows ×
    PANEL) takes the padded last panel.

    The rows are cut into tiles of at most MAX_TILE_ROWS, as even as they go (32 rows: 6, 6, 5, 5, 5, 5),
    since a tile of a few rows cannot keep the multiply-add units busy; each tile takes TILE_PANELS[rows]
    panels at a time, and what is left of them one by one.
    """
    if out.size and out.strides[1] != 4:
        raise ValueError("panel_product writes rows of contiguous floats")
    if a.size and a.strides[1] != 4:  # the tiles read each row as contiguous floats
        a = np.ascontiguousarray(a)
    m, n = a.shape[0], out.shape[1]
    full = n // PANEL
    tiles = -(-m // MAX_TILE_ROWS)
    i = 0
    for t in range(tiles):
        rows = m // tiles + (1 if t < m % tiles else 0)
        q, end = first, min(stop, full)
        while q < end:
            count = TILE_PANELS[rows] if end - q >= TILE_PANELS[rows] else 1
            tile_product(rows, count, a, i, panels, q, out, q * PANEL)
            q += count
        if full < stop:
            tile_product(rows, 1, a, i, panels, full, scratch, 0)
            for r in range(i, i + rows):
                for j in range(full * PANEL, n):
                    out[r, j] = scratch[r, j - full * PANEL]
        i += rows


# `panel_product` compiled once, as a C function that the time loops call by name: linked into each kernel
# that calls it, its tiles' unrolled cases were optimized by LLVM again in every one (about half a second
# of each time loop's compile). Named by the tiles' width, the one this process compiled.
PANEL_PRODUCT_SYMBOL = f"kdsl_panel_product_{VECTOR_BITS}"
PANEL_PRODUCT = types.void(
    types.voidptr, types.int64, types.int64, types.int64,  # a, its rows, K and the distance between its rows
    types.voidptr, types.int64,  # panels and their count
    types.voidptr,  # scratch: rows × PANEL
    types.voidptr, types.int64, types.int64,  # out, its columns and the distance between its rows
    types.int64, types.int64,  # first and stop
)  # fmt: skip


def panel_product_c(a, rows, k, lda, panels, count, scratch, out, n, ldo, first, stop):
    a_rows = numba.carray(a, (rows, lda), np.float32)[:, :k]
    out_rows = numba.carray(out, (rows, ldo), np.float32)[:, :n]
    packed = numba.carray(panels, (count, k, PANEL), np.float32)
    panel_product(a_rows, packed, numba.carray(scratch, (rows, PANEL), np.float32), out_rows, first, stop)


llvm.add_symbol(PANEL_PRODUCT_SYMBOL, numba.cfunc(PANEL_PRODUCT, cache=True, nogil=True)(panel_product_c).address)
panel_product_by_name = types.ExternalFunction(PANEL_PRODUCT_SYMBOL, PANEL_PRODUCT)


@numba.njit(cache=True)
def call_panel_product(a, panels, scratch, out, first, stop):
    """`panel_product` through its C function: what every time loop calls."""
    if a.shape[0] == 0 or out.shape[1] == 0:
        return
    if out.strides[1] != 4:
        raise ValueError("panel_product writes rows of contiguous floats")
    if a.strides[1] != 4:  # the tiles read each row as contiguous floats
        a = np.ascontiguousarray(a)
    panels = np.ascontiguousarray(panels)
    scratch = np.ascontiguousarray(scratch)
    lda, ldo = max(a.strides[0] // 4, a.shape[1]), max(out.strides[0] // 4, out.shape[1])
    panel_product_by_name(a.ctypes, a.shape[0], a.shape[1], lda, panels.ctypes, panels.shape[0], scratch.ctypes,
                          out.ctypes, out.shape[1], ldo, first, stop)  # fmt: skip
