"""Launch configurations: how many blocks of how many threads each kind of kernel gets.

Element kernels loop over their elements with a grid-stride loop, so any grid covers any
size; the grid is capped so a huge tensor does not launch more blocks than the GPU can
keep resident. The simulator runs one Python thread per CUDA thread, so there a launch
gets one small block and each thread takes many elements. This module imports no CUDA
code: `--explain` uses it without a GPU.
"""

from __future__ import annotations

import os

THREADS = 256  # per block: a multiple of the 32-thread warp, and enough warps to hide memory latency
MAX_BLOCKS = 4096  # 132 SMs of an H100 hold 16 blocks of 256 threads each about twice over
GEMM_TILE = 16  # a 16x16 tile: 256 threads, 2 KiB of shared memory per operand
MULTIPROCESSORS = 132  # an H100's or H200's: what --explain assumes with no GPU to ask
MIN_PERSISTENT_THREADS = 64
WARP = 32
ROWS = 4  # rows of a product's tile in a persistent kernel (`kdsl.backends.cuda.cell_products`)
SIMULATED_THREADS = 2
SIMULATED_TILE = 4


def simulated() -> bool:
    """Whether Numba's CUDA simulator is switched on (it must be, before Numba is first imported)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def element_grid(count: int, simulator: bool | None = None) -> tuple[int, int]:
    """(blocks, threads per block) for a kernel over `count` elements."""
    if simulated() if simulator is None else simulator:
        return 1, max(1, min(count, SIMULATED_THREADS))
    return max(1, min(-(-count // THREADS), MAX_BLOCKS)), THREADS


def persistent_grid(
    count: int, tiles: int = 0, multiprocessors: int = MULTIPROCESSORS, simulator: bool | None = None
) -> tuple[int, int]:
    """(blocks, threads per block) for a persistent kernel whose widest loop has `count` work items and whose
    products with the recurrent weight have up to `tiles` tiles.

    With products, a block per tile and full blocks: a tile's warps split its inner dimension, so the more
    warps the shorter each thread's sum. Without, blocks shrink, down to two warps, until there are enough of
    them for every multiprocessor: a step's phases are short. The grid must also fit on the GPU at once; the
    runner caps it.
    """
    if simulated() if simulator is None else simulator:
        return element_grid(max(count, tiles), simulator=True)
    if tiles:
        return max(tiles, -(-count // THREADS)), THREADS
    threads = THREADS
    while threads > MIN_PERSISTENT_THREADS and count < multiprocessors * threads:
        threads //= 2
    return max(1, -(-count // threads)), threads


def product_tiles(rows: int, columns: int) -> int:
    """How many tiles a persistent kernel cuts a (rows, columns) product into: ROWS rows by a warp's columns."""
    return -(-rows // ROWS) * -(-columns // WARP)


def gemm_tile(simulator: bool | None = None) -> int:
    return SIMULATED_TILE if (simulated() if simulator is None else simulator) else GEMM_TILE


def gemm_grid(rows: int, columns: int, tile: int, simulator: bool | None = None) -> tuple[int, tuple[int, int]]:
    """(blocks, threads) of the tiled GEMM kernel: a block per tile of the output, one element per thread.

    Blocks loop over tiles, so the simulator runs one block (each block costs it a set of Python threads).
    """
    tiles = -(-columns // tile) * -(-rows // tile)
    blocks = 1 if (simulated() if simulator is None else simulator) else min(tiles, MAX_BLOCKS)
    return blocks, (tile, tile)
