"""The Numba CPU backend: lowered programs become Python source for `@njit` kernels, written to real files."""
