"""Keras's callbacks: checkpoints, early stopping, learning-rate control, NaN guard, CSV / JSON-lines logs and
TensorBoard's scalars.

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
from collections.abc import Callable
from typing import Any

import numpy as np

from kdsl.errors import KdslArgumentError, KdslError, KdslUnsupportedError
from kdsl.files import write_atomically


class Callback:
    model: Any = None

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
