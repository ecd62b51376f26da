"""`replica_sum`: a value summed across the replicas of a data-parallel step (Keras's cross-replica all-reduce).

BatchNormalization with `synchronized=True` sums its statistics this way. With the replicas' losses weighed by
their shares of the global batch (each replica's gradients scaled by its share, then summed), the gradient of
a summed value on replica r is Σ_q share_q·g_q / share_r: the `gradient` form, which scales, sums and unscales.

Which collective does the sum is set by the strategy running the step (`summing`); every backend's rule calls
`replica_sum`. Outside such a step the job is one replica, and both forms leave a value as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import numpy as np

from kdsl.ir.ops.base import Op

Summing = Callable[[np.ndarray, bool], None]  # (contiguous float32 buffer, gradient?) -> None, summed in place

_current: list[Summing | None] = [None]


def replica_sum(buffer: np.ndarray, gradient: bool) -> None:
    """Sum `buffer` in place across the replicas of the step under way."""
    summing_now = _current[0]
    if summing_now is not None:
        summing_now(buffer, gradient)


@contextlib.contextmanager
def summing(collective: Summing) -> Iterator[None]:
    """Within it, replica sums are done by `collective`."""
    previous, _current[0] = _current[0], collective
    try:
        yield
    finally:
        _current[0] = previous


class ReplicaSum(Op):
    name = "replica_sum"

    def infer(self, attrs, x):
        return [x]

    def reference(self, attrs, x):
        total = np.array(x, np.float32, copy=True).reshape(-1)
        replica_sum(total, attrs.get("gradient", False))
        return [total.reshape(np.shape(x))]

    def vjp(self, b, eqn, grads):
        if eqn.attrs.get("gradient", False):
            raise NotImplementedError("`replica_sum`'s gradient form has no gradient: training differentiates once")
        return [b.replica_sum(grads[0], gradient=True)]


OPS = [ReplicaSum()]
