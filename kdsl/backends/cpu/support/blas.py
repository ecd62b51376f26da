"""Every matrix product of the kernels through the newest OpenBLAS in the process.

Numba's `np.dot` calls the BLAS that SciPy ships, and NumPy ships an OpenBLAS of its own, often a
newer and faster one (benchmarks/RESULTS.md has the figures). So `product` calls `cblas_sgemm`
through the symbol `kdsl_cblas_sgemm`, which `register_sgemm` binds at import to the newest
OpenBLAS loaded that takes 64-bit integers (NumPy's does). A symbol rather than an address keeps
the kernels that call it cacheable on disk. Where no such OpenBLAS is newer than SciPy's, the
symbol `kdsl_sgemm_found` says so, and `product` calls `np.dot` as before.

Every product going to one BLAS also keeps two thread pools from taking turns, which made an epoch
many times slower.

Part of the support package generated modules import (and a standalone module carries beside it): it
needs only NumPy and Numba (with threadpoolctl and SciPy it finds the faster BLAS).
"""

import ctypes
import functools

import numba
import numpy as np
from llvmlite import binding as llvm
from numba import types

__all__ = ["product"]  # what generated code names

SGEMM_SYMBOL, FOUND_SYMBOL = "kdsl_cblas_sgemm", "kdsl_sgemm_found"
CBLAS_SGEMM = types.void(
    types.int32, types.int32, types.int32,  # order, transpose a, transpose b
    types.int64, types.int64, types.int64,  # m, n, k
    types.float32, types.voidptr, types.int64,  # alpha, a, lda
    types.voidptr, types.int64,  # b, ldb
    types.float32, types.voidptr, types.int64,  # beta, c, ldc
)  # fmt: skip
FOUND = types.int64()
ROW_MAJOR, NO_TRANSPOSE, TRANSPOSE = 101, 111, 112
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


def sgemm_found_yes():
    return 1


def sgemm_found_no():
    return 0


def sgemm_missing(order, transpose_a, transpose_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """What `kdsl_cblas_sgemm` is bound to where no newer OpenBLAS is loaded: `product` never calls it then."""


def register_sgemm() -> None:
    """Bind `kdsl_cblas_sgemm` to the fastest `cblas_sgemm` found (see the module's docstring), and
    `kdsl_sgemm_found` to whether there is one."""
    address = fastest_sgemm()
    found = numba.cfunc(FOUND, cache=True)(sgemm_found_yes if address else sgemm_found_no)
    if address is None:
        address = numba.cfunc(CBLAS_SGEMM, cache=True)(sgemm_missing).address
    llvm.add_symbol(SGEMM_SYMBOL, address)
    llvm.add_symbol(FOUND_SYMBOL, found.address)


register_sgemm()
cblas_sgemm = types.ExternalFunction(SGEMM_SYMBOL, CBLAS_SGEMM)
sgemm_found = types.ExternalFunction(FOUND_SYMBOL, FOUND)


@numba.njit(cache=True)
def blas_layout(x):
    """How BLAS reads float32 matrix `x` where it lies: (NO_TRANSPOSE, the distance between rows), or
    (TRANSPOSE, the distance between columns) for a transposed view; (0, 0) where it cannot (a strided,
    reversed or broadcast axis)."""
    rows, cols = x.shape
    if (x.strides[1] == 4 or cols == 1) and (rows == 1 or x.strides[0] >= 4 * cols):
        return NO_TRANSPOSE, max(x.strides[0] // 4, cols, 1)
    if (x.strides[0] == 4 or rows == 1) and (cols == 1 or x.strides[1] >= 4 * rows):
        return TRANSPOSE, max(x.strides[1] // 4, rows, 1)
    return 0, 0


@numba.njit(cache=True)
def product(a, b, out):
    """out = a·b for float32 matrices: `a` and `b` may be transposed views, `out` has contiguous rows.

    Through `kdsl_cblas_sgemm` where it is found and reads both in place; else Numba's `np.dot`.
    """
    transpose_a, lda = blas_layout(a)
    transpose_b, ldb = blas_layout(b)
    transpose_out, ldo = blas_layout(out)
    if not sgemm_found() or lda == 0 or ldb == 0 or transpose_out != NO_TRANSPOSE or a.shape[1] == 0 or out.size == 0:
        np.dot(a, b, out)
        return
    m, n, k = out.shape[0], out.shape[1], a.shape[1]
    one, zero = np.float32(1), np.float32(0)
    cblas_sgemm(ROW_MAJOR, transpose_a, transpose_b, m, n, k, one, a.ctypes, lda, b.ctypes, ldb, zero, out.ctypes, ldo)
