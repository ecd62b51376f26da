"""Cached kernels keyed by the source of their whole package, not their own file alone.

Numba keys a function it caches on disk by the text of the file that defines it, but a kernel also
compiles in what it calls from neighbouring files (an update loop inlines its rule, a step product its
register tiles), and would run their old code from a warm cache after they change — after an edit, or
an upgrade. A package that calls `key_by_package` before defining its cached kernels has each of them
keyed by the text of every Python file below its folder (the innermost such package, when they nest),
and by the choices it makes when imported (the register tiles' vector width). Numba keys each entry by
the CPU's name and features too, so a cache moved to another CPU compiles anew.
Needs only Numba, like the rest of this package, so a standalone copy keys itself the same way.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from numba.core.caching import CacheImpl, InTreeCacheLocator, UserProvidedCacheLocator, UserWideCacheLocator

__all__ = ["key_by_package"]

_ROOTS: dict[Path, str] = {}  # a keyed package's folder -> the choices its code was compiled with


def key_by_package(init_file: str, choices: str = "") -> None:
    """Key the cached kernels defined below the folder of `init_file` (a package's `__init__.py`) by its source
    and by `choices`, which name what its code compiles differently by (settings read when imported)."""
    _ROOTS[Path(init_file).resolve().parent] = choices
    if not any(issubclass(locator, _PackageStamp) for locator in CacheImpl._locator_classes):
        CacheImpl._locator_classes[:0] = _LOCATORS


def _package_of(py_file: str) -> Path | None:
    path = Path(py_file).resolve()
    return max((root for root in _ROOTS if root in path.parents), key=lambda root: len(root.parts), default=None)


@functools.cache
def _package_digest(root: Path) -> bytes:
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    digest.update(_ROOTS[root].encode())
    return digest.digest()


class _PackageStamp:
    """Numba's own locators, for functions of a keyed package, with the package's digest as the source stamp."""

    @classmethod
    def from_function(cls, py_func, py_file):
        return super().from_function(py_func, py_file) if _package_of(py_file) else None

    def get_source_stamp(self):
        return _package_digest(_package_of(self._py_file))


_LOCATORS = [
    type(f"Package{base.__name__}", (_PackageStamp, base), {})
    for base in (UserProvidedCacheLocator, InTreeCacheLocator, UserWideCacheLocator)
]
