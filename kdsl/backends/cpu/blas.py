"""Weight gradients (aᵀ·b summed over batch and time) through the newest OpenBLAS in the process.

Numba's `np.dot` calls the BLAS that SciPy ships, and NumPy ships an OpenBLAS of its own, often a
newer one. On the Zen 3 machine, with identical calls on one thread, NumPy's OpenBLAS 0.3.31 ran
the weight-gradient shapes 12–55% faster than SciPy's 0.3.30 ((1792×64)ᵀ·(1792×256): 74 against
57 GFLOP/s; (1792×28)ᵀ·(1792×256): 64 against 42), and the same on every other product. So
`product_tn`, for long sums in kernels split across threads, calls `cblas_sgemm` through the
symbol `kdsl_cblas_sgemm`, which `register_sgemm` binds at import to the newest OpenBLAS loaded
that takes 64-bit integers (NumPy's does). A symbol rather than an address keeps the kernels that
call it cacheable on disk. Where no such OpenBLAS is newer than SciPy's, the symbol is a C callback
running `np.dot`, which is what the kernels did before.

This module's source is copied into generated modules: it needs only NumPy and Numba (with threadpoolctl
and SciPy it finds the faster BLAS).
"""

import ctypes
import functools

import numba
import numpy as np
from llvmlite import binding as llvm
from numba import types

SGEMM_SYMBOL = "kdsl_cblas_sgemm"
CBLAS_SGEMM = types.void(
    types.int32, types.int32, types.int32,  # order, transpose a, transpose b
    types.int64, types.int64, types.int64,  # m, n, k
    types.float32, types.voidptr, types.int64,  # alpha, a, lda
    types.voidptr, types.int64,  # b, ldb
    types.float32, types.voidptr, types.int64,  # beta, c, ldc
)  # fmt: skip
ROW_MAJOR, NO_TRANSPOSE, TRANSPOSE = 101, 111, 112
LONG_SUM = 256  # rows summed: the weight gradients of sequences, where NumPy's OpenBLAS is faster
WIDE_CBLAS_SGEMM = ("scipy_cblas_sgemm64_", "cblas_sgemm64_", "cblas_sgemm_64")  # the 64-bit-integer names


def openblas_version(lib) -> tuple[int, ...]:
    return tuple(int(part) for part in (lib.version or "0").split(".") if part.isdigit())


@functools.cache
def loaded_blas() -> list | None:
    """threadpoolctl's controllers of every BLAS in the process, SciPy's included (the one Numba's
    `np.dot` calls, loaded here so that it is found); None without SciPy or threadpoolctl."""
    try:
        import scipy.linalg  # noqa: F401
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return [lib for lib in ThreadpoolController().lib_controllers if lib.user_api == "blas"]


def fastest_sgemm() -> int | None:
    """The address of the 64-bit-integer `cblas_sgemm` of the newest OpenBLAS loaded, if that is newer than
    every OpenBLAS without one (SciPy's, which Numba's `np.dot` calls); None where another BLAS is loaded."""
    if loaded_blas() is None:
        return None
    wide, narrow = [], []
    for lib in loaded_blas():
        if lib.internal_api != "openblas":
            return None  # unmeasured
        handle = ctypes.CDLL(lib.filepath)
        names = [name for name in WIDE_CBLAS_SGEMM if hasattr(handle, name)]
        if names:
            wide.append((openblas_version(lib), ctypes.cast(getattr(handle, names[0]), ctypes.c_void_p).value))
        else:
            narrow.append(openblas_version(lib))
    if not wide:
        return None
    version, address = max(wide)
    return address if version > max(narrow, default=()) else None


def sgemm_by_np_dot(order, transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """`cblas_sgemm` for the one call `product_tn` makes (row-major c = aᵀ·b), by Numba's `np.dot`."""
    left = numba.carray(a, (k, lda), np.float32)
    right = numba.carray(b, (k, ldb), np.float32)
    out = numba.carray(c, (m, ldc), np.float32)
    out[:, :n] = np.dot(np.ascontiguousarray(left[:, :m].T), np.ascontiguousarray(right[:, :n]))


def register_sgemm() -> None:
    """Bind `kdsl_cblas_sgemm` to the fastest `cblas_sgemm` found (see the module's docstring)."""
    address = fastest_sgemm()
    if address is None:
        address = numba.cfunc(CBLAS_SGEMM, cache=True)(sgemm_by_np_dot).address
    llvm.add_symbol(SGEMM_SYMBOL, address)


register_sgemm()
cblas_sgemm = types.ExternalFunction(SGEMM_SYMBOL, CBLAS_SGEMM)


@numba.njit(cache=True)
def row_stride(x):
    """The distance between rows of float32 matrix `x` in elements, if BLAS can read it so (else 0)."""
    if x.strides[1] != 4 and x.shape[1] > 1:
        return 0
    if x.shape[0] > 1 and x.strides[0] < 4 * x.shape[1]:  # rows overlap, run backwards or are broadcast
        return 0
    return max(x.strides[0] // 4, x.shape[1], 1)


@numba.njit(cache=True)
def product_tn(a, b, out, threads):
    """out = aᵀ·b (a: K×M, b: K×N, out: contiguous M×N) by `kdsl_cblas_sgemm`, for a long sum (K ≥ LONG_SUM)
    in a kernel split across `threads` > 1, where every BLAS is held to one thread. Returns whether it
    did; elsewhere the caller runs `np.dot` itself.

    Two BLAS libraries taking turns with threads of their own fight over the cores (a Fashion-MNIST
    MLP epoch took 26.9 s against 1.7), and on short sums the switch cost more than it saved.
    """
    lda, ldb = row_stride(a), row_stride(b)
    if threads < 2 or a.shape[0] < LONG_SUM or lda == 0 or ldb == 0 or out.size == 0:
        return False
    one, zero = np.float32(1), np.float32(0)
    m, n, k = a.shape[1], b.shape[1], a.shape[0]
    cblas_sgemm(ROW_MAJOR, TRANSPOSE, NO_TRANSPOSE, m, n, k, one, a.ctypes, lda, b.ctypes, ldb, zero, out.ctypes, n)
    return True
