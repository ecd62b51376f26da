"""Matrix products inside a persistent time-loop kernel: every thread of the grid takes a share of the outputs.

A thread computes ROWS rows of one output column, so it reads each weight element once for ROWS
rows, where a thread per output element would read the weight's column once per row (the recurrent
weight stays in L2 from step to step; this quarters that traffic). Adjacent threads take adjacent
columns: a warp's reads of the weight are coalesced and its reads of x one broadcast. The generated
module carries this code (`kdsl.backends.cuda.persistent`), so a change here changes its hash.
"""

import numpy as np
from numba import cuda

ROWS = 4


@cuda.jit(device=True)
def rows_by_matrix(x, w, y, transpose_w):
    """y = x @ w (x @ wᵀ with `transpose_w`): x (rows, inner), w (inner, columns) or (columns, inner)."""
    rows, columns = y.shape
    inner = x.shape[1]
    for flat in range(cuda.grid(1), (rows + ROWS - 1) // ROWS * columns, cuda.gridsize(1)):
        j, i = flat % columns, flat // columns * ROWS
        if i + ROWS <= rows:
            s0, s1, s2, s3 = np.float32(0.0), np.float32(0.0), np.float32(0.0), np.float32(0.0)
            for k in range(inner):
                weight = w[j, k] if transpose_w else w[k, j]
                s0 += x[i, k] * weight
                s1 += x[i + 1, k] * weight
                s2 += x[i + 2, k] * weight
                s3 += x[i + 3, k] * weight
            y[i, j], y[i + 1, j], y[i + 2, j], y[i + 3, j] = s0, s1, s2, s3
        else:
            for r in range(i, rows):
                total = np.float32(0.0)
                for k in range(inner):
                    total += x[r, k] * (w[j, k] if transpose_w else w[k, j])
                y[r, j] = total


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
