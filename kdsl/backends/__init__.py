"""Backends that run lowered programs: the NumPy reference interpreter and the Numba CPU code generator."""
