"""The registry of primitive ops, by name. Each family lives in its own module."""

from kdsl.ir.ops import elementwise, linalg, reduce, scan, shape
from kdsl.ir.ops.base import Op

OPS: dict[str, Op] = {op.name: op for family in (elementwise, linalg, reduce, shape, scan) for op in family.OPS}

__all__ = ["OPS", "Op"]
