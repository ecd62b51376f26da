"""Generated modules as real files in kdsl's cache, named by the hash of their text: Numba caches compiled
functions on disk only for code in files, so a second process imports the kernels instead of compiling them.

A generated module imports the code its kernels call (`kdsl.backends.cpu.support`, the CUDA cell products)
and names the digest of that code's files, so a change there gives the module another hash, and another
cache entry, as a change in its own text does."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

from kdsl.files import write_atomically


def cache_dir() -> Path:
    """Where generated modules (and Numba's compiled kernels beside them) are kept: $KDSL_CACHE_DIR or ~/.cache/kdsl."""
    return Path(os.environ.get("KDSL_CACHE_DIR") or Path.home() / ".cache" / "kdsl")


def load_module(source: str) -> ModuleType:
    """Import generated source from a file named by its hash, so Numba's disk cache finds it next time."""
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    path = cache_dir() / f"kdsl_{digest}.py"
    if not path.exists():
        write_atomically(path, source)
    name = f"kdsl_generated_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def source_digest(*modules: ModuleType) -> str:
    """A digest of the source files of `modules` (a package counts with every module in its folder)."""
    digest = hashlib.sha256()
    for module in modules:
        path = Path(module.__file__)
        for file in sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
