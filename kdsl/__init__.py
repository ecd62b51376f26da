"""kdsl: a model-graph compiler for dense and recurrent networks."""

from kdsl.errors import KdslError

__all__ = ["KdslError"]
__version__ = "0.1.0"
