"""What generated CPU modules import: the code their kernels call besides their own.

Each module here needs only NumPy, Numba and llvmlite (and finds the faster BLAS through
threadpoolctl and SciPy where they are there), and imports its neighbours relatively, so
`kdsl compile -o` copies the package whole beside a standalone module. Each lists in `__all__`
what generated code may name.
"""

from . import llvm_options  # noqa: F401  (raises the vectorizer's bound before any kernel compiles)
from .cache_keys import key_by_package
from .register_tiles import VECTOR_BITS

key_by_package(__file__, f"vector bits {VECTOR_BITS}")
