"""Generated modules as real files in kdsl's cache, named by the hash of their text: Numba caches compiled
functions on disk only for code in files, so a second process imports the kernels instead of compiling them.

A generated module imports the code its kernels call (`kdsl.backends.cpu.support`, the CUDA cell products)
and names the digest of that code's files, so a change there gives the module another hash, and another
cache entry, as a change in its own text does.

The cache only ever runs what kdsl generated. Its directory is private to the user (created 0700; one that
another user owns or can write is refused, as SSH refuses its keys). A module is imported only when its text
hashes to its name; otherwise (planted, edited, truncated, empty) it is written again from the source in hand.
Numba unpickles its cache files, so those of a module are kept only when they too are the user's, writable by
no one else, and end where a pickle ends; otherwise they are deleted and Numba compiles afresh.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import shutil
import stat
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from types import ModuleType

from kdsl.errors import KdslError
from kdsl.files import write_atomically

_PICKLE_STOP = b"."
_LOADING = threading.Lock()  # one import at a time: a module is in sys.modules before its code has run


def cache_dir() -> Path:
    """Where generated modules (and Numba's compiled kernels beside them) are kept: $KDSL_CACHE_DIR or
    ~/.cache/kdsl, or a private temporary folder, with a warning, when that one cannot be written."""
    return _trusted_dir(os.environ.get("KDSL_CACHE_DIR") or str(Path.home() / ".cache" / "kdsl"))


_CHOSEN: dict[str, Path] = {}  # each wanted folder, or the temporary one standing in for it, once made and probed


def _trusted_dir(wanted: str) -> Path:
    """`wanted`, made private and probed once per process, and checked private at every call (its permissions
    may change); a temporary folder of our own when it cannot be written."""
    if wanted not in _CHOSEN:
        _CHOSEN[wanted] = _writable_or_temporary(Path(wanted))
    chosen = _CHOSEN[wanted]
    _check_private(chosen)
    return chosen


def _writable_or_temporary(path: Path) -> Path:
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        _check_private(path)
        probe = path / f".probe.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        return path
    except OSError as error:
        fallback = Path(tempfile.mkdtemp(prefix="kdsl-cache-"))
        atexit.register(shutil.rmtree, fallback, True)
        warnings.warn(
            f"kdsl: cannot write the kernel cache {path} ({error.strerror or error}); "
            f"using {fallback} for this run, so kernels compile again next time",
            stacklevel=4,
        )
        return fallback


def _check_private(path: Path) -> None:
    """Refuse a folder whose files another user could have written."""
    info = path.stat()
    if _foreign(info):
        raise KdslError(
            f"refusing the kernel cache {path}: "
            + ("it belongs to another user" if info.st_uid != os.getuid() else "other users can write to it"),
            hint=f"kdsl runs the code in this folder; make it yours alone (chmod 700 {path}) "
            "or point KDSL_CACHE_DIR at a folder that is",
        )


def _foreign(info: os.stat_result) -> bool:
    """Whether another user owns, or can write, what `info` describes (POSIX permissions only)."""
    if not hasattr(os, "getuid"):
        return False
    return info.st_uid != os.getuid() or bool(info.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def load_module(source: str) -> ModuleType:
    """Import generated source from a file named by its hash, so Numba's disk cache finds it next time."""
    with _LOADING:
        return _load(source)


def _load(source: str) -> ModuleType:
    digest = _digest(source)
    name = f"kdsl_generated_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    folder = cache_dir()
    path = folder / f"kdsl_{digest}.py"
    rewrite = not _holds(path, digest)
    _drop_numba_files(folder, path.stem, only_unsound=not rewrite)
    if rewrite:
        write_atomically(path, source)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _digest(source: str | bytes) -> str:
    return hashlib.sha256(source.encode() if isinstance(source, str) else source).hexdigest()[:20]


def _holds(path: Path, digest: str) -> bool:
    """Whether `path` is the user's own file and its text is the one its name promises."""
    try:
        info = path.lstat()
        return not _foreign(info) and stat.S_ISREG(info.st_mode) and _digest(path.read_bytes()) == digest
    except OSError:
        return False


def _drop_numba_files(folder: Path, stem: str, only_unsound: bool) -> None:
    """Delete the Numba cache files of module `stem`: all of them, or only those that cannot be trusted whole."""
    pycache = folder / "__pycache__"
    if not pycache.exists():
        return
    if pycache.is_symlink() or not pycache.is_dir():
        raise KdslError(
            f"refusing the kernel cache {folder}: its __pycache__ is not a folder of its own",
            hint=f"remove {pycache}; Numba writes it again",
        )
    _check_private(pycache)
    for file in pycache.glob(f"{stem}.*"):
        if not only_unsound or not _sound_pickle(file):
            file.unlink(missing_ok=True)


def _sound_pickle(file: Path) -> bool:
    try:
        info = file.lstat()
        if _foreign(info) or not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return False
        with file.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == _PICKLE_STOP
    except OSError:
        return False


def source_digest(*modules: ModuleType) -> str:
    """A digest of the source files of `modules` (a package counts with every module in its folder)."""
    digest = hashlib.sha256()
    for module in modules:
        path = Path(module.__file__)
        for file in sorted(path.parent.glob("*.py")) if path.name == "__init__.py" else [path]:
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
