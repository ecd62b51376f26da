"""Keras's callbacks: checkpoints, early stopping, learning-rate control, NaN guard, CSV / JSON-lines logs,
TensorBoard's scalars and backups to resume an interrupted run from.

A callback sees the model and the epoch's logs (`loss`, metrics, `val_*`); setting
`model.stop_training` ends `fit` after the current epoch (or batch, for TerminateOnNaN).
Files are written through a temporary file and renamed, so a crash never leaves half a file.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from kdsl.errors import KdslArgumentError, KdslError, KdslUnsupportedError
from kdsl.files import npz_bytes, write_atomically


class Callback:
    model: Any = None
    chief_only = False  # under a distribution strategy, whether only the chief runs it (it writes files)

    def set_model(self, model: Any) -> None:
        self.model = model

    def on_train_begin(self, logs: dict | None = None) -> None: ...

    def on_train_end(self, logs: dict | None = None) -> None: ...

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None: ...

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None: ...


class _Monitor:
    """The monitored quantity and whether a new value improves on the best so far."""

    def __init__(self, monitor: str, mode: str, min_delta: float):
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        if mode == "auto":
            mode = "max" if "acc" in monitor or monitor.endswith("auc") else "min"
        self.monitor, self.sign, self.min_delta = monitor, 1 if mode == "min" else -1, abs(min_delta)
        self.best = math.inf

    def value(self, logs: dict | None) -> float | None:
        value = (logs or {}).get(self.monitor)
        return None if value is None else float(value)

    def improved(self, value: float) -> bool:
        return self.sign * value < self.best - self.min_delta

    def record(self, value: float) -> None:
        self.best = self.sign * value


class ModelCheckpoint(Callback):
    """Save the model (or its weights) after each epoch; `filepath` may name `{epoch}` and log keys."""

    chief_only = True

    def __init__(self, filepath: str, monitor: str = "val_loss", save_best_only: bool = False,
                 save_weights_only: bool = False, mode: str = "auto", verbose: int = 0):  # fmt: skip
        self.filepath, self.save_best_only, self.save_weights_only = str(filepath), save_best_only, save_weights_only
        self.criterion, self.verbose = _Monitor(monitor, mode, 0.0), verbose

    def on_epoch_end(self, epoch, logs=None):
        path = self.filepath.format(epoch=epoch + 1, **(logs or {}))
        if self.save_best_only:
            value = self.criterion.value(logs)
            if value is None or not self.criterion.improved(value):
                return
            self.criterion.record(value)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved to {path}")


class EarlyStopping(Callback):
    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, mode: str = "auto",
                 restore_best_weights: bool = False, start_from_epoch: int = 0, verbose: int = 0):  # fmt: skip
        self.criterion = _Monitor(monitor, mode, min_delta)
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.verbose = verbose
        self.wait, self.best_weights, self.stopped_epoch, self.best_epoch = 0, None, 0, 0

    def on_train_begin(self, logs=None):
        self.wait, self.best_weights, self.stopped_epoch = 0, None, 0
        self.criterion.best = math.inf

    def on_epoch_end(self, epoch, logs=None):
        value = self.criterion.value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.criterion.improved(value):
            self.criterion.record(value)
            self.wait, self.best_epoch = 0, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch and self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        if self.stopped_epoch and self.verbose:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping (best epoch {self.best_epoch + 1})")


class LearningRateScheduler(Callback):
    """`schedule(epoch, lr) -> new lr`, applied at the start of each epoch."""

    def __init__(self, schedule: Callable[[int, float], float], verbose: int = 0):
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        optimizer = self.model.optimizer
        optimizer.learning_rate = float(self.schedule(epoch, optimizer.learning_rate))
        if self.verbose:
            print(f"Epoch {epoch + 1}: learning rate {optimizer.learning_rate:.6g}")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = self.model.optimizer.learning_rate


class ReduceLROnPlateau(Callback):
    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, mode: str = "auto",
                 min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0, verbose: int = 0):  # fmt: skip
        if factor >= 1.0:
            raise ValueError("ReduceLROnPlateau needs factor < 1")
        self.criterion = _Monitor(monitor, mode, min_delta)
        self.factor, self.patience, self.cooldown, self.min_lr = factor, patience, cooldown, min_lr
        self.verbose = verbose
        self.wait = self.cooldown_left = 0

    def on_epoch_end(self, epoch, logs=None):
        value = self.criterion.value(logs)
        if value is None:
            return
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        if self.criterion.improved(value):
            self.criterion.record(value)
            self.wait = 0
        elif self.cooldown_left == 0:
            self.wait += 1
            if self.wait >= self.patience:
                optimizer = self.model.optimizer
                optimizer.learning_rate = max(optimizer.learning_rate * self.factor, self.min_lr)
                self.cooldown_left, self.wait = self.cooldown, 0
                if self.verbose:
                    print(f"Epoch {epoch + 1}: learning rate reduced to {optimizer.learning_rate:.6g}")


class TerminateOnNaN(Callback):
    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            print(f"Batch {batch}: invalid loss {loss}, terminating training")
            self.model.stop_training = True


class CSVLogger(Callback):
    """One row per epoch: `epoch` and every log value, rewritten whole (atomically) after each epoch."""

    chief_only = True

    def __init__(self, filename: str, separator: str = ",", append: bool = False):
        self.filename, self.separator, self.append = filename, separator, append
        self.rows: list[dict] = []

    def on_train_begin(self, logs=None):
        self.rows = []
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                self.rows = list(csv.DictReader(f, delimiter=self.separator))

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **(logs or {})})
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        out = io.StringIO()
        writer = csv.DictWriter(out, keys, delimiter=self.separator, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        write_atomically(self.filename, out.getvalue())


class JSONLinesLogger(Callback):
    """One JSON object per epoch: `{"epoch": 0, "loss": ..., ...}`, easy to read from any tool."""

    chief_only = True

    def __init__(self, filename: str):
        self.filename = filename
        self.lines: list[str] = []

    def on_train_begin(self, logs=None):
        self.lines = []

    def on_epoch_end(self, epoch, logs=None):
        self.lines.append(json.dumps({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}))
        write_atomically(self.filename, "\n".join(self.lines) + "\n")


class TensorBoard(Callback):
    """Scalar summaries TensorBoard reads, as Keras writes them: `epoch_<name>` for the loss, each metric and the
    learning rate at each epoch in `log_dir/train` (validation's in `log_dir/validation`), and, with `update_freq`
    "batch" or N, `batch_<name>` every N batches, the epoch's running means so far. Through tensorboardX, the
    optional extra `pip install 'kdsl[tensorboard]'`. Histograms, images, profiling and embeddings are refused;
    the model's graph is not written (`write_graph`, on by default in Keras, writes nothing here)."""

    chief_only = True

    def __init__(self, log_dir: str = "logs", histogram_freq: int = 0, write_graph: bool = True,
                 write_images: bool = False, write_steps_per_second: bool = False, update_freq: str | int = "epoch",
                 profile_batch: int = 0, embeddings_freq: int = 0, embeddings_metadata: Any = None):  # fmt: skip
        refused = {"histogram_freq": histogram_freq, "write_images": write_images, "profile_batch": profile_batch,
                   "write_steps_per_second": write_steps_per_second, "embeddings_freq": embeddings_freq,
                   "embeddings_metadata": embeddings_metadata}  # fmt: skip
        for name, value in refused.items():
            if value:
                raise KdslUnsupportedError(f"TensorBoard({name}=...) is not supported", hint=f"leave out `{name}`")
        if update_freq != "epoch" and update_freq != "batch" and not (isinstance(update_freq, int) and update_freq > 0):
            raise KdslArgumentError(f'update_freq is "epoch", "batch" or a number of batches, got {update_freq!r}')
        self.log_dir, self.update_freq = log_dir, 1 if update_freq == "batch" else update_freq
        self.batches = 0
        self.writers: dict[str, Any] = {}

    def on_train_begin(self, logs=None):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:
            raise KdslError("the TensorBoard callback writes through tensorboardX, which is not installed",
                            hint="pip install 'kdsl[tensorboard]'") from None  # fmt: skip
        self.writers = {part: SummaryWriter(os.path.join(self.log_dir, part)) for part in ("train", "validation")}
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1
        if self.update_freq != "epoch" and self.batches % self.update_freq == 0:
            for name, value in (logs or {}).items():
                self.writers["train"].add_scalar(f"batch_{name}", float(value), self.batches)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        logs["learning_rate"] = self.model.optimizer.learning_rate
        for name, value in logs.items():
            writer, tag = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            self.writers[writer].add_scalar(f"epoch_{tag}", float(value), epoch)
        for writer in self.writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.close()


BACKUP_FILE = "backup.npz"


class BackupAndRestore(Callback):
    """Back up the training state in `backup_dir` at the end of each epoch (`save_freq="epoch"`) or every
    `save_freq` batches; the next `fit` with this callback resumes from it and ends with the weights an
    uninterrupted run ends with. `delete_checkpoint`: remove the backup once training ends.

    A backup is one file, written whole or not at all (so `double_checkpoint` is not needed): the weights, the
    optimizer's slots and step, the epoch and how many of its batches were done, the generator that shuffles
    batches as it was when that epoch began (the resumed epoch draws the same order, then skips the batches
    done), and each replica's dropout generator. Under a distribution strategy every replica takes part in each
    backup (their dropout generators are gathered) and the chief writes it; every replica reads it back.
    """

    def __init__(self, backup_dir: str | Path, save_freq: str | int = "epoch", double_checkpoint: bool = False,
                 delete_checkpoint: bool = True):  # fmt: skip
        if not backup_dir:
            raise KdslArgumentError("BackupAndRestore needs a backup_dir")
        if save_freq != "epoch" and (not isinstance(save_freq, int) or isinstance(save_freq, bool) or save_freq < 1):
            raise KdslArgumentError(f"save_freq must be 'epoch' or a whole number of batches, got {save_freq!r}")
        if double_checkpoint:
            raise KdslUnsupportedError(
                "double_checkpoint=True: a backup is written atomically, never left half-written",
                hint="leave double_checkpoint out",
            )
        self.backup_dir, self.save_freq, self.delete_checkpoint = Path(backup_dir), save_freq, delete_checkpoint
        self.path = self.backup_dir / BACKUP_FILE
        self._epoch, self._batches_since_backup = 0, 0
        self._epoch_shuffle: dict = {}

    def on_train_begin(self, logs=None):
        self._batches_since_backup = 0
        if self.path.exists():
            self._restore()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._epoch_shuffle = self.model.trainer.rng.bit_generator.state  # before the epoch draws its order

    def on_train_batch_end(self, batch, logs=None):
        if self.save_freq == "epoch":
            return
        self._batches_since_backup += 1
        if self._batches_since_backup >= self.save_freq:
            self._batches_since_backup = 0
            self._back_up(self._epoch, batch + 1, self._epoch_shuffle)

    def on_epoch_end(self, epoch, logs=None):
        self._batches_since_backup = 0
        if self.save_freq == "epoch":
            self._back_up(epoch + 1, 0, self.model.trainer.rng.bit_generator.state)

    def on_train_end(self, logs=None):
        trainer = self.model.trainer
        if self.delete_checkpoint and trainer.strategy.is_chief and self.backup_dir.exists():
            shutil.rmtree(self.backup_dir)

    # --- writing and reading ---------------------------------------------------------------------

    def _back_up(self, epoch: int, batches: int, shuffle: dict) -> None:
        """The state after `batches` batches of epoch `epoch` (from 0), `shuffle` the generator as it began."""
        trainer = self.model.trainer
        strategy = trainer.strategy
        dropout = strategy.gather_json(trainer.compiled.rng.bit_generator.state)  # every replica takes part
        if not strategy.is_chief:
            return
        optimizer = trainer.optimizer
        state = {
            "epoch": epoch,
            "batches": batches,
            "replicas": strategy.num_replicas_in_sync,
            "optimizer": {"iterations": optimizer.iterations, "learning_rate": optimizer.learning_rate},
            "random": {"batches": shuffle, "dropout": dropout},
        }
        arrays = {f"weight/{i}": w for i, w in enumerate(self.model.state.weights)}
        arrays |= {f"slot/{i}/{name}": v for i, slots in enumerate(optimizer.slots) for name, v in slots.items()}
        arrays["state.json"] = np.frombuffer(json.dumps(state).encode(), np.uint8)
        write_atomically(self.path, npz_bytes(arrays))

    def _restore(self) -> None:
        try:
            state, weights, slots = _read(self.path)
            self._apply(state, weights, slots)
        except (KeyError, TypeError, ValueError) as error:
            raise KdslError(f"{self.path}: not a backup of this model and run ({type(error).__name__}: {error})",
                            hint="delete the backup directory to start afresh") from None  # fmt: skip

    def _apply(self, state: dict, weights: dict[str, np.ndarray], slots: dict[str, np.ndarray]) -> None:
        trainer = self.model.trainer
        strategy = trainer.strategy
        if state["replicas"] != strategy.num_replicas_in_sync:
            raise ValueError(f"it was written by {state['replicas']} replicas, this run has "
                             f"{strategy.num_replicas_in_sync}")  # fmt: skip
        model_weights = self.model.state.weights
        if len(weights) != len(model_weights):
            raise ValueError(f"it holds {len(weights)} weights, the model has {len(model_weights)}")
        self.model.state.weights = [weights[f"weight/{i}"] for i in range(len(model_weights))]
        optimizer = trainer.optimizer
        trained = [model_weights[i] for i in trainer.compiled.trainable]
        optimizer.resume(state["optimizer"]["iterations"], state["optimizer"]["learning_rate"], trained)
        for key, value in slots.items():
            _, index, name = key.split("/")
            optimizer.slots[int(index)][name][...] = value
        trainer.rng.bit_generator.state = state["random"]["batches"]
        trainer.compiled.rng.bit_generator.state = state["random"]["dropout"][strategy.replica_id]
        self.model._initial_epoch, self.model._initial_step = int(state["epoch"]), int(state["batches"])


def _read(path: Path) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The state and the weights and slots by name; arrays only, never pickled objects."""
    try:
        with np.load(io.BytesIO(path.read_bytes()), allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, zipfile.BadZipFile, ValueError) as error:
        raise KdslError(f"{path}: not a readable backup ({error})", hint="delete it to start afresh") from None
    state = json.loads(bytes(arrays.pop("state.json")))
    weights = {k: v for k, v in arrays.items() if k.startswith("weight/")}
    slots = {k: v for k, v in arrays.items() if k.startswith("slot/")}
    return state, weights, slots
