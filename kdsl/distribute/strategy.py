"""Keras's distribution strategies on processes: `MirroredStrategy` (processes on one host) and
`MultiWorkerMirroredStrategy` (processes on several hosts), synchronous data parallelism over a communicator.

Every process (replica) holds the whole model. When `fit` begins, the chief's (rank 0's) weights are broadcast,
and each replica takes a dropout stream of its own, derived from one draw of the chief's generator. Each global
batch is split into one shard per replica, as `tf.distribute` rebatches it: a full batch evenly (the first
replicas one sample more when it does not divide), the last, smaller batch of an epoch filling the replicas'
shares in order (the last replicas taking fewer samples, or none). After the backward pass the gradients are
summed across the replicas in a few flat buckets, each replica's weighed by its share of the global batch's
samples: kdsl's losses are means over the batch, so the sum is the gradient of the whole global batch, and every
replica applies the same update. Moving statistics (BatchNormalization's) are each replica's own batch's,
averaged after each step (as Keras reads its per-replica mirrored statistics: their mean); with
`synchronized=True` the step's kernels sum the statistics (and their gradients) across the replicas, so every
replica normalizes by the global batch's. Losses and metrics
are summed as (total, count) pairs, so the logs are those of the whole global batch.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdsl.distribute.communicator import Communicator, LocalCommunicator, world
from kdsl.errors import KdslError, KdslUnsupportedError
from kdsl.ir.ops.replicas import ReplicaSum, summing

BUCKET_BYTES = 4 * 2**20  # a few buckets for a big model, one for a small one: each all-reduce call costs latency

_CURRENT: contextvars.ContextVar[Strategy | None] = contextvars.ContextVar("kdsl_strategy", default=None)


def replica_generator(entropy: int, replica: int) -> np.random.Generator:
    """The generator replica `replica`'s dropout masks draw from: its own stream, derived from `entropy`, which
    every replica shares (the chief's next draw from the model's generator, itself seeded by `compile(seed=)`)."""
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(replica,)))


class Strategy:
    """Synchronous data parallelism over `communicator`'s processes (by default those `mpiexec` launched, or this
    one alone); one replica per process."""

    def __init__(self, communicator: Communicator | None = None, bucket_bytes: int = BUCKET_BYTES):
        self.communicator = communicator if communicator is not None else world()
        self.bucket_bytes = bucket_bytes
        self.reduce_seconds = 0.0  # time in gradient all-reduces so far (waiting for slower replicas included)
        self._buckets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._replica_calls: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # each step's sums' sizes

    @property
    def num_replicas_in_sync(self) -> int:
        return self.communicator.size

    @property
    def replica_id(self) -> int:
        """This process's replica: 0 is the chief."""
        return self.communicator.rank

    @property
    def is_chief(self) -> bool:
        """Whether this process prints the progress bar and writes checkpoints, logs and saved models."""
        return self.communicator.rank == 0

    @contextlib.contextmanager
    def scope(self) -> Iterator[Strategy]:
        """Models compiled within it train with this strategy, as Keras's `strategy.scope()`."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            _CURRENT.reset(token)

    # --- set-up ---------------------------------------------------------------------------------

    def check_target(self, target: str) -> None:
        """Gradients are summed in host memory: a device target would need CUDA-aware MPI, not done yet."""
        if self.num_replicas_in_sync > 1 and target == "cuda":
            raise KdslUnsupportedError(
                "training on several processes with target='cuda'",
                hint="train with target='cpu' under mpiexec; the gradients are all-reduced in host memory",
            )

    def synchronize(self, state: Any) -> None:
        """Before training: every replica takes the chief's weights (in one flat buffer), and a dropout stream of
        its own, derived from the chief's generator (replicas drawing the same masks would waste the batch)."""
        if self.num_replicas_in_sync == 1:
            return
        weights = state.weights
        flat = np.concatenate([w.reshape(-1) for w in weights]) if weights else np.zeros(0, np.float32)
        self.communicator.broadcast(flat)
        _unpack(flat, weights)
        entropy = np.array([state.rng.integers(2**63)], np.int64)
        self.communicator.broadcast(entropy)
        state.rng = replica_generator(int(entropy[0]), self.replica_id)

    # --- batches ------------------------------------------------------------------------------------

    def replica_rows(self, rows: int, batch_size: int | None = None) -> slice:
        """This replica's rows of a global batch of `rows`, as `tf.distribute` rebatches one: each replica's share
        of a full batch of `batch_size` (None: `rows`) is an even split, the first replicas one more when it does
        not divide; a last, smaller batch fills the shares in replica order, so the last replicas take fewer rows,
        or none."""
        share, extra = divmod(rows if batch_size is None else batch_size, self.num_replicas_in_sync)
        rank = self.replica_id
        start = rank * share + min(rank, extra)
        return slice(min(start, rows), min(start + share + (rank < extra), rows))

    def shard(self, inputs: list, labels: list, weights: list, batch_size: int | None) -> tuple[list, list, list]:
        """This replica's part of a global batch of (inputs, labels, sample weights or None), of `batch_size` rows
        when full (None: as many as it has)."""
        if self.num_replicas_in_sync == 1:
            return inputs, labels, weights
        rows = self.replica_rows(inputs[0].shape[0], batch_size)
        return [a[rows] for a in inputs], [a[rows] for a in labels], [w if w is None else w[rows] for w in weights]

    # --- steps ----------------------------------------------------------------------------------------

    def train_step(
        self, compiled: Any, inputs: list, labels: list, weights: list | None, global_rows: int | None
    ) -> float:
        """This replica's step on its shard, then the gradients of the global batch of `global_rows` samples (None:
        every replica was given the same batch) in `compiled.grads` on every replica; returns the shard's loss."""
        if self.num_replicas_in_sync == 1:
            return compiled.train_step(inputs, labels, weights)
        rows = inputs[0].shape[0]
        share = rows / global_rows if global_rows else 1.0 / self.num_replicas_in_sync
        if rows:
            calls = self._replica_calls[compiled] = []
            with summing(functools.partial(self._replica_sum, share, calls)):
                loss = compiled.train_step(inputs, labels, weights)
        else:
            loss = 0.0
            self._replay_replica_sums(compiled)
        started = time.perf_counter()
        self._sum_gradients(compiled, share)
        self._average_statistics(compiled, ran=rows > 0)
        self.reduce_seconds += time.perf_counter() - started
        return loss

    def _replica_sum(self, share: float, calls: list[int], buffer: np.ndarray, gradient: bool) -> None:
        """A sum the step's kernels ask for (synchronized BatchNormalization's), its size noted in `calls`. A
        gradient is summed as the replicas' gradients are, each weighed by its share, then divided by this
        replica's share, since the gradients it flows into will be weighed by it again."""
        calls.append(buffer.size)
        if gradient:
            buffer *= np.float32(share)
        self.communicator.allreduce(buffer)
        if gradient:
            buffer /= np.float32(share)

    def _replay_replica_sums(self, compiled: Any) -> None:
        """A replica with no rows (the last batch's) takes part in the sums the others' steps make, with zeros."""
        calls = self._replica_calls.get(compiled)
        if calls is None:
            if not any(isinstance(eqn.op, ReplicaSum) for eqn in compiled.training.lowered.program.eqns):
                return
            raise KdslError(
                f"replica {self.replica_id} has no samples in the first global batch, and the step sums "
                "synchronized BatchNormalization's statistics across the replicas",
                hint=f"use a global batch of at least {self.num_replicas_in_sync} samples",
            )
        for size in calls:
            self.communicator.allreduce(np.zeros(size, np.float32))

    def _sum_gradients(self, compiled: Any, share: float) -> None:
        """Each bucket packed (scaled by `share`) and its all-reduce started before the next is packed."""
        grads = compiled.grads
        buckets = self._buckets.get(compiled)
        if buckets is None:
            buckets = self._buckets[compiled] = _buckets(grads, self.bucket_bytes)
        pending = []
        for indices, buffer in buckets:
            if share == 0:  # an empty shard: its stale gradients may hold anything, even NaN
                buffer.fill(0.0)
            else:
                _pack(buffer, [grads[i] for i in indices], np.float32(share))
            pending.append(self.communicator.start_allreduce(buffer))
        for (indices, buffer), request in zip(buckets, pending):
            request.wait()
            _unpack(buffer, [grads[i] for i in indices])

    def _average_statistics(self, compiled: Any, ran: bool) -> None:
        """The moving statistics the step updated, averaged over the replicas that ran it (`ran`: this one did;
        a replica with no rows in a last batch keeps its earlier ones, and takes the others' average)."""
        updated = [compiled.state.host[i] for i, _ in compiled.training.lowered.updates]
        if not updated:
            return
        flat = np.concatenate([*(w.reshape(-1) for w in updated), [1.0]]).astype(np.float32)
        if not ran:
            flat.fill(0.0)
        self.communicator.allreduce(flat)
        flat /= flat[-1]
        _unpack(flat[:-1], updated)

    def reduce_sum(self, values: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        """(total, count) pairs summed over the replicas, in one call."""
        if self.num_replicas_in_sync == 1:
            return list(values)
        flat = np.asarray(values, np.float64).reshape(-1)
        self.communicator.allreduce(flat)
        return [(float(t), float(c)) for t, c in flat.reshape(-1, 2)]

    def gather_json(self, value: Any) -> list[Any]:
        """Every replica's `value` (anything JSON writes), in replica order, on every replica."""
        data = np.frombuffer(json.dumps(value).encode(), np.uint8)
        sizes = np.zeros(self.num_replicas_in_sync, np.int64)
        sizes[self.replica_id] = data.size
        self.communicator.allreduce(sizes)
        slots = np.zeros((self.num_replicas_in_sync, int(sizes.max())), np.int32)  # each replica fills its own row
        slots[self.replica_id, : data.size] = data
        self.communicator.allreduce(slots)
        return [json.loads(bytes(row[:size].astype(np.uint8))) for row, size in zip(slots, sizes)]

    def barrier(self) -> None:
        self.communicator.barrier()


def _buckets(grads: Sequence[np.ndarray], limit: int) -> list[tuple[list[int], np.ndarray]]:
    """The gradients grouped into flat float32 buffers of about `limit` bytes, the last weights first (as the
    backward pass finishes them first)."""
    buckets: list[list[int]] = [[]]
    size = 0
    for index in reversed(range(len(grads))):
        if buckets[-1] and size + grads[index].nbytes > limit:
            buckets.append([])
            size = 0
        buckets[-1].append(index)
        size += grads[index].nbytes
    return [(indices, np.zeros(sum(grads[i].size for i in indices), np.float32)) for indices in buckets if indices]


def _pack(buffer: np.ndarray, arrays: Sequence[np.ndarray], scale: np.float32) -> None:
    offset = 0
    for array in arrays:
        np.multiply(np.asarray(array).reshape(-1), scale, out=buffer[offset : offset + array.size])
        offset += array.size


def _unpack(buffer: np.ndarray, arrays: Sequence[np.ndarray]) -> None:
    offset = 0
    for array in arrays:
        array[...] = buffer[offset : offset + array.size].reshape(array.shape)
        offset += array.size


class MirroredStrategy(Strategy):
    """Keras's `MirroredStrategy` on processes of one host: one replica per process `mpiexec -n N` launched."""

    def __init__(self, devices: Any = None, cross_device_ops: Any = None, communicator: Communicator | None = None):
        _refuse(devices=devices, cross_device_ops=cross_device_ops)
        super().__init__(communicator)


class MultiWorkerMirroredStrategy(Strategy):
    """Keras's `MultiWorkerMirroredStrategy`: one replica per process, on as many hosts as `mpiexec` runs on."""

    def __init__(self, cluster_resolver: Any = None, communication_options: Any = None,
                 communicator: Communicator | None = None):  # fmt: skip
        _refuse(cluster_resolver=cluster_resolver, communication_options=communication_options)
        super().__init__(communicator)

    @property
    def cluster_resolver(self) -> Task:
        """This process's task, as TensorFlow's resolver gives it: worker `task_id` 0 is the chief."""
        return Task("worker", self.replica_id)


@dataclass(frozen=True)
class Task:
    """A process's place in the job, as TensorFlow names it."""

    task_type: str
    task_id: int


def _refuse(**given: Any) -> None:
    """TensorFlow's device lists and cluster specs: MPI's launcher says which processes take part."""
    for name, value in given.items():
        if value is not None:
            raise KdslUnsupportedError(
                f"`{name}`: the processes are those mpiexec launched",
                hint="leave it out and launch with `mpiexec -n N python train.py`",
            )


_DEFAULT = Strategy(LocalCommunicator())


def current() -> Strategy:
    """The strategy of the innermost `strategy.scope()`, else the default: this process alone."""
    return _CURRENT.get() or _DEFAULT
