"""The registry of primitive ops, by name. Each family lives in its own module."""

from kdsl.ir.ops import elementwise, linalg, reduce, replicas, scan, shape
from kdsl.ir.ops.base import Op

FAMILIES = (elementwise, linalg, reduce, replicas, shape, scan)
OPS: dict[str, Op] = {op.name: op for family in FAMILIES for op in family.OPS}

__all__ = ["OPS", "Op"]
