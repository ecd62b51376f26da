"""Matrix products inside a persistent time-loop kernel, shared out over the whole grid.

A block takes a tile of the output, ROWS rows by a warp's 32 columns, and its warps split the
inner dimension between them; their partial sums meet in shared memory. Each weight element read
serves ROWS rows, adjacent threads read adjacent columns (coalesced) and a warp reads x as one
broadcast. Splitting the inner dimension is what makes small batches fast: at batch 1 an LSTM(512)
step is 2,048 dot products of length 512, which as a thread per output would leave most of the GPU
idle and each thread a chain of 512 dependent adds from L2; a block per tile puts 64 blocks of 8
warps on it, each thread adding 64 products. At large batches the tiles outnumber the blocks and the
split costs two block barriers a tile. A block narrower than two warps (the simulator's) gives each
thread one column and splits the inner dimension between all of them. The generated module carries
these functions from here, with the digest of this file, so a change here changes its hash.
"""

import numpy as np
from numba import cuda

from kdsl.backends.cuda.launch import ROWS, THREADS, WARP

__all__ = ["matrix_tn", "rows_by_matrix", "transpose_into"]  # what generated code names

PARTIALS = THREADS * ROWS  # a partial sum for each row of each thread of a block (a size Numba must know)


@cuda.jit(device=True)
def rows_by_matrix(x, w, y):
    """y = x @ w: x (rows, inner), w (inner, columns).

    Every thread of a block must call it (the block meets at barriers inside), and a block has a multiple of
    WARP threads or fewer than two warps.
    """
    rows, columns = y.shape
    inner, last = x.shape[1], rows - 1
    lanes = WARP if cuda.blockDim.x >= 2 * WARP else 1
    chunks = cuda.blockDim.x // lanes
    lane, chunk = cuda.threadIdx.x % lanes, cuda.threadIdx.x // lanes
    start, stop = np.uint64(chunk * inner // chunks), np.uint64((chunk + 1) * inner // chunks)
    partial = cuda.shared.array(PARTIALS, np.float32)
    column_tiles = (columns + lanes - 1) // lanes
    for tile in range(cuda.blockIdx.x, (rows + ROWS - 1) // ROWS * column_tiles, cuda.gridDim.x):
        i, first = tile // column_tiles * ROWS, tile % column_tiles * lanes
        j = first + lane
        s0, s1, s2, s3 = np.float32(0.0), np.float32(0.0), np.float32(0.0), np.float32(0.0)
        if j < columns:
            i1, i2, i3 = min(i + 1, last), min(i + 2, last), min(i + 3, last)  # a short last tile repeats its row
            # An unsigned index in a while loop: Numba's range over signed integers hides the induction variable
            # and checks each index for wrapping around, which took twice the instructions of this loop.
            k = start
            while k < stop:
                weight = w[k, j]
                s0 += x[i, k] * weight
                s1 += x[i1, k] * weight
                s2 += x[i2, k] * weight
                s3 += x[i3, k] * weight
                k += np.uint64(1)
        at = chunk * ROWS * lanes + lane
        partial[at], partial[at + lanes], partial[at + 2 * lanes], partial[at + 3 * lanes] = s0, s1, s2, s3
        cuda.syncthreads()
        for flat in range(cuda.threadIdx.x, ROWS * lanes, cuda.blockDim.x):
            row, column = i + flat // lanes, first + flat % lanes
            if row < rows and column < columns:
                total = np.float32(0.0)
                for c in range(chunks):
                    total += partial[c * ROWS * lanes + flat]
                y[row, column] = total
        cuda.syncthreads()  # the next tile overwrites the partial sums


@cuda.jit(device=True)
def matrix_tn(a, b, y):
    """y = aᵀ @ b: a (rows, inner), b (rows, columns), a thread per element of y (inner, columns)."""
    inner, columns = y.shape
    for flat in range(cuda.grid(1), inner * columns, cuda.gridsize(1)):
        k, j = flat // columns, flat % columns
        total = np.float32(0.0)
        for r in range(a.shape[0]):
            total += a[r, k] * b[r, j]
        y[k, j] = total


@cuda.jit(device=True)
def transpose_into(w, out):
    """out = wᵀ, a thread per element."""
    rows, columns = out.shape
    for flat in range(cuda.grid(1), rows * columns, cuda.gridsize(1)):
        out[flat // columns, flat % columns] = w[flat % columns, flat // columns]
