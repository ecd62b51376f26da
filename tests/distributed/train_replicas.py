"""Trains a `.kd` model for the distributed tests: under `mpiexec -n N` as N replicas, else as one process.

    python train_replicas.py MODEL.kd OUT.npz [--samples N] [--batch-size B] [--epochs E] [--weighted] [--backup DIR]
                             [--chief-loads WEIGHTS.npz] [--kill-rank R --kill-at-batch K]

The chief writes the final weights to OUT.npz (`w0`, `w1`, ... in the model's order) and the logs to OUT.json.
With --kill-rank, that replica kills itself (SIGKILL) after the K-th batch of its second epoch, having written the
time to OUT.npz.killed.
"""

import argparse
import json
import os
import signal
import time

import numpy as np

import kdsl
from kdsl.distribute import MirroredStrategy


def synthetic_data(model: kdsl.Model, samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs, class ids and sample weights shaped as the model takes them, from a fixed seed."""
    rng = np.random.default_rng(1234)
    (value,) = model.graph.inputs
    shape = tuple(samples if isinstance(d, str) else d for d in value.type.dims)
    x = rng.standard_normal(shape).astype(np.float32)
    classes = model.graph.outputs[0].type.dims[-1]
    return x, rng.integers(0, classes, samples).astype(np.int32), rng.uniform(0.5, 2.0, samples).astype(np.float32)


class KillAt(kdsl.callbacks.Callback):
    def __init__(self, batch: int, stamp: str):
        self.batch, self.stamp, self.epoch = batch, stamp, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self.epoch == 1 and batch + 1 == self.batch:
            with open(self.stamp, "w") as file:  # when it died, for the test to time the job's end
                file.write(str(time.time()))
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("out")
    parser.add_argument("--samples", type=int, default=165)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--weighted", action="store_true", help="train with sample weights")
    parser.add_argument("--backup")
    parser.add_argument("--chief-loads", help="weights (.npz) the chief alone loads before training")
    parser.add_argument("--kill-rank", type=int)
    parser.add_argument("--kill-at-batch", type=int, default=1)
    args = parser.parse_args()
    strategy = MirroredStrategy()
    with strategy.scope():
        model = kdsl.load_model_file(args.model)
        model.compile(seed=7)
    if args.chief_loads and strategy.is_chief:
        model.load_weights(args.chief_loads)
    x, y, weights = synthetic_data(model, args.samples)
    callbacks = []
    if args.backup:
        callbacks.append(kdsl.callbacks.BackupAndRestore(args.backup, save_freq=1))
    if args.kill_rank == strategy.replica_id:
        callbacks.append(KillAt(args.kill_at_batch, args.out + ".killed"))
    history = model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=callbacks,
                        sample_weight=weights if args.weighted else None)  # fmt: skip
    # batches of all samples but one, then one: a replica with nothing to evaluate in the second
    scores = model.evaluate(x, y, batch_size=args.samples - 1, return_dict=True)
    if strategy.is_chief:
        np.savez(args.out, **{f"w{i}": w for i, w in enumerate(model.get_weights())})
        logs = {"history": history.history, "evaluate": scores, "replicas": strategy.num_replicas_in_sync}
        with open(args.out.removesuffix(".npz") + ".json", "w") as file:
            json.dump(logs, file)


if __name__ == "__main__":
    main()
