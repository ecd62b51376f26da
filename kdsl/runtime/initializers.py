"""Initial weights drawn as Keras draws them, for every initializer the catalogue accepts.

Fans follow Keras: for a kernel `(fan_in, fan_out)`; for a vector, both are its length;
for higher ranks, the last two axes times the receptive field. Truncated normals are cut
at two standard deviations and rescaled (÷ 0.8796…) so the variance is the one asked for.
Draws come from a NumPy `Generator`: seeded runs repeat exactly, though not Keras's numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from kdsl.catalogue.args import FnSpec
from kdsl.errors import KdslArgumentError
from kdsl.ir.graph import Graph

TRUNCATED_STDDEV_CORRECTION = 0.87962566103423978  # stddev of a unit normal truncated to [-2, 2]

Shape = tuple[int, ...]


def initialize(spec: FnSpec, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """A C-ordered float32 array of `shape` drawn by the initializer `spec`; its own `seed`, if set, wins over `rng`.

    C order matters: the kernels take C-contiguous arrays, and any other layout would be copied at every call.
    """
    seed = spec.args.get("seed")
    if seed is not None:
        rng = np.random.default_rng(seed)
    values = _INITIALIZERS[spec.name](dict(spec.args), shape, rng)
    return np.ascontiguousarray(np.asarray(values, dtype=np.float32).reshape(shape))


def fans(shape: Shape) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _truncated_normal(rng: np.random.Generator, mean: float, stddev: float, shape: Shape) -> np.ndarray:
    """Normal draws outside two standard deviations are drawn again."""
    values = rng.standard_normal(shape)
    outside = np.abs(values) > 2
    while outside.any():
        values[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(values) > 2
    return mean + stddev * values


def _variance_scaling(args: dict, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    fan_in, fan_out = fans(shape)
    n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[args["mode"]]
    variance = args["scale"] / max(1.0, n)
    if args["distribution"] == "truncated_normal":
        return _truncated_normal(rng, 0.0, math.sqrt(variance) / TRUNCATED_STDDEV_CORRECTION, shape)
    if args["distribution"] == "untruncated_normal":
        return rng.normal(0.0, math.sqrt(variance), shape)
    limit = math.sqrt(3.0 * variance)
    return rng.uniform(-limit, limit, shape)


def _scaled(scale: float, mode: str, distribution: str) -> Callable:
    def draw(args: dict, shape: Shape, rng: np.random.Generator) -> np.ndarray:
        return _variance_scaling({"scale": scale, "mode": mode, "distribution": distribution}, shape, rng)

    return draw


def _orthogonal(args: dict, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """Orthonormal rows or columns (whichever are fewer), as Keras builds them from a QR decomposition."""
    if len(shape) < 2:
        raise KdslArgumentError(f"the orthogonal initializer needs a matrix, got shape {shape}")
    rows, cols = math.prod(shape[:-1]), shape[-1]
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))
    if rows < cols:
        q = q.T
    return args["gain"] * q


def _identity(args: dict, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    if len(shape) != 2:
        raise KdslArgumentError(f"the identity initializer needs a matrix, got shape {shape}")
    return args["gain"] * np.eye(*shape)


_INITIALIZERS: dict[str, Callable[[dict, Shape, np.random.Generator], np.ndarray]] = {
    "zeros": lambda args, shape, rng: np.zeros(shape),
    "ones": lambda args, shape, rng: np.ones(shape),
    "constant": lambda args, shape, rng: np.full(shape, args["value"]),
    "random_normal": lambda args, shape, rng: rng.normal(args["mean"], args["stddev"], shape),
    "random_uniform": lambda args, shape, rng: rng.uniform(args["minval"], args["maxval"], shape),
    "truncated_normal": lambda args, shape, rng: _truncated_normal(rng, args["mean"], args["stddev"], shape),
    "glorot_uniform": _scaled(1.0, "fan_avg", "uniform"),
    "glorot_normal": _scaled(1.0, "fan_avg", "truncated_normal"),
    "he_uniform": _scaled(2.0, "fan_in", "uniform"),
    "he_normal": _scaled(2.0, "fan_in", "truncated_normal"),
    "lecun_uniform": _scaled(1.0, "fan_in", "uniform"),
    "lecun_normal": _scaled(1.0, "fan_in", "truncated_normal"),
    "variance_scaling": _variance_scaling,
    "orthogonal": _orthogonal,
    "identity": _identity,
}


def initial_weights(graph: Graph, rng: np.random.Generator) -> list[np.ndarray]:
    """Every parameter of `graph`, in `get_weights` order, drawn by its initializer.

    An LSTM's `unit_forget_bias` sets the forget-gate quarter of its bias to one, as Keras does.
    """
    weights = []
    for layer in graph.layers():
        for spec in layer.params or []:
            value = initialize(spec.initializer, spec.shape, rng)
            if spec.forget_units:
                value[spec.forget_units : 2 * spec.forget_units] = 1.0
            weights.append(value)
    return weights
