"""This machine's memory, and refusing what it cannot hold before allocating it (rather than dying in
`MemoryError`, or being killed by the system when the pages are touched)."""

from __future__ import annotations

import os

from kdsl.errors import KdslError

BYTES_PER_NUMBER = 4  # float32 values, int32 ids


def machine_memory() -> int | None:
    """This machine's physical memory in bytes, or None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, OSError, ValueError):
        return None


def format_bytes(size: float) -> str:
    """`96.54 KB`, `1.20 GB`: sizes as the summary prints them (binary multiples)."""
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            break
        size /= 1024
    return f"{size:.2f} {unit}"


def require(size: int, what: str, hint: str) -> None:
    """Refuse, before allocating, `size` bytes that this machine's memory cannot hold."""
    available = machine_memory()
    if available is not None and size > available:
        raise KdslError(
            f"{what} need {format_bytes(size)}, more than this machine's {format_bytes(available)}", hint=hint
        )
