"""Data-parallel training (kdsl.distribute): sharding, replicas under `mpiexec -n 2` against one process on the
same global batch, dropout masks replayed, BatchNormalization's per-replica statistics, a killed replica and
`BackupAndRestore`."""

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import kdsl
from kdsl.distribute import MirroredStrategy, replica_generator
from kdsl.errors import KdslError, KdslUnsupportedError
from kdsl.runtime.state import ModelState

ROOT = Path(__file__).resolve().parent.parent
HELPER = ROOT / "tests" / "distributed" / "train_replicas.py"
MNIST_LSTM = (ROOT / "examples" / "mnist_lstm.kd").read_text()
SAMPLES, BATCH, SEED = 165, 64, 7  # 165 = 64 + 64 + 37: the last global batch splits 32 / 5

sys.path.insert(0, str(HELPER.parent))
from train_replicas import synthetic_data  # noqa: E402


def _mpiexec() -> str | None:
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(
    importlib.util.find_spec("mpi4py") is None or _mpiexec() is None,
    reason="mpi4py or mpiexec is not installed: pip install 'kdsl[mpi]' to run the tests on several processes",
)


def _model_file(tmp_path: Path, name: str, replace: str | None = None) -> Path:
    """mnist_lstm.kd with its BatchNormalization line replaced (None: kept)."""
    line = "    h     = batch_normalization(h)\n"
    text = MNIST_LSTM if replace is None else MNIST_LSTM.replace(line, replace)
    path = tmp_path / f"{name}.kd"
    path.write_text(text)
    return path


WITHOUT_BN = ""
WITH_DROPOUT = "    h     = dropout(h, 0.4)\n"


def _environment() -> dict[str, str]:
    """One thread per process: the replicas share the cores."""
    return {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def _launch(ranks: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    command = [_mpiexec(), "-n", str(ranks), sys.executable, str(HELPER), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_environment())


def _trained(ranks: int, model: Path, out: Path, *args: str) -> list[np.ndarray]:
    done = _launch(ranks, str(model), str(out), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as saved:
        return [saved[f"w{i}"] for i in range(len(saved.files))]


def _one_process(model_file: Path, masks=None, loads: Path | None = None, weighted: bool = False,
                 samples: int = SAMPLES) -> tuple[kdsl.Model, dict]:  # fmt: skip
    """The model trained in this process on the global batches of `samples` (dropout masks from `masks(model)` when
    given), from the weights in `loads` when given, with the sample weights when `weighted`; and its `History`."""
    model = kdsl.load_model_file(model_file)
    model.compile(seed=SEED)
    if loads is not None:
        model.load_weights(loads)
    if masks is not None:
        model.state.dropout_masks = masks(model)
    x, y, weights = synthetic_data(model, samples)
    history = model.fit(x, y, batch_size=BATCH, verbose=0, sample_weight=weights if weighted else None)
    return model, history.history


def _close(got: list[np.ndarray], expected: list[np.ndarray], tolerance: float = 1e-5) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=0, atol=tolerance)


# --- without MPI --------------------------------------------------------------------------------------------


class _Rank:
    def __init__(self, rank: int, size: int):
        self.rank, self.size = rank, size


def _split(rows: int, batch_size: int | None, replicas: int) -> list[list[int]]:
    strategies = [MirroredStrategy(communicator=_Rank(r, replicas)) for r in range(replicas)]
    return [np.arange(rows)[s.replica_rows(rows, batch_size)].tolist() for s in strategies]


def test_global_batches_split_as_tf_distribute_rebatches_them():
    # tf.distribute's guide: 7 samples in global batches of 4 on 2 replicas give [0, 1] [2, 3], then [4, 5] [6]
    assert _split(4, 4, 2) == [[0, 1], [2, 3]] and _split(3, 4, 2) == [[0, 1], [2]]
    assert _split(65, 65, 2) == [list(range(33)), list(range(33, 65))]  # the first replicas one more
    assert _split(37, 64, 2) == [list(range(32)), list(range(32, 37))]  # a last batch fills the shares in order
    assert _split(1, 64, 2) == [[0], []] and _split(5, 8, 4) == [[0, 1], [2, 3], [4], []]
    assert _split(7, None, 3) == [[0, 1, 2], [3, 4], [5, 6]]  # a dataset's batches, of no set size: each evenly


def test_multi_worker_task_of_each_process():
    tasks = [kdsl.distribute.MultiWorkerMirroredStrategy(communicator=_Rank(r, 3)).cluster_resolver for r in range(3)]
    assert [(t.task_type, t.task_id) for t in tasks] == [("worker", 0), ("worker", 1), ("worker", 2)]


def test_strategy_arguments_of_tensorflow_are_refused():
    with pytest.raises(KdslUnsupportedError, match="devices"):
        MirroredStrategy(devices=["/gpu:0"])
    with pytest.raises(KdslUnsupportedError, match="cluster_resolver"):
        kdsl.distribute.MultiWorkerMirroredStrategy(cluster_resolver=object())


def test_synchronized_batch_normalization_alone_normalizes_by_keras_synchronized_moments(tmp_path):
    """One replica: the batch's statistics as Keras's synchronized moments, E(x²) - E(x)² from the sums, checked
    against NumPy's; then a training run equal to plain BatchNormalization's to float32 rounding."""
    path = tmp_path / "normalized.kd"
    path.write_text(
        "model Normalized(x: f32[batch, 16]) -> y {\n"
        "    h = batch_normalization(x, synchronized=true)\n"
        "    y = dense(h, 3, activation=softmax)\n"
        "}\n"
    )
    model = kdsl.load_model_file(path)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", target="numpy", seed=SEED)
    x = np.random.default_rng(SEED).normal(3.0, 2.0, (BATCH, 16)).astype(np.float32)
    model.train_on_batch(x, np.arange(BATCH) % 3)
    features, momentum = x.astype(np.float64), 0.99
    mean = features.mean(axis=0)
    variance = np.maximum((features**2).mean(axis=0) - mean**2, 0.0)
    moving_mean, moving_variance = model.get_layer("batch_normalization").get_weights()[2:]
    np.testing.assert_allclose(moving_mean, (1 - momentum) * mean, rtol=0, atol=1e-6)
    np.testing.assert_allclose(moving_variance, momentum + (1 - momentum) * variance, rtol=0, atol=1e-6)
    synchronized = _model_file(tmp_path, "synchronized", "    h     = batch_normalization(h, synchronized=true)\n")
    trained = []
    for path in (_model_file(tmp_path, "plain"), synchronized):
        model = kdsl.load_model_file(path)
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", target="numpy", seed=SEED)
        x, y, _ = synthetic_data(model, SAMPLES)
        model.fit(x, y, batch_size=BATCH, epochs=1, shuffle=False, verbose=0)
        trained.append(model.get_weights())
    _close(*trained)


def test_outside_mpiexec_one_replica_same_weights_no_mpi_import(tmp_path):
    """The same script without mpiexec: one replica, the weights of plain training, and MPI never imported."""
    model_file = _model_file(tmp_path, "plain", WITHOUT_BN)
    script = f"""
import sys, numpy as np, kdsl
sys.path.insert(0, {str(HELPER.parent)!r})
from train_replicas import synthetic_data
strategy = kdsl.distribute.MirroredStrategy()
with strategy.scope():
    model = kdsl.load_model_file({str(model_file)!r})
    model.compile(seed={SEED})
x, y, _ = synthetic_data(model, {SAMPLES})
model.fit(x, y, batch_size={BATCH}, verbose=0)
np.savez({str(tmp_path / "scoped.npz")!r}, *model.get_weights())
assert strategy.num_replicas_in_sync == 1 and strategy.is_chief
assert "mpi4py" not in sys.modules, "MPI imported by a one-process run"
"""
    environment = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(tmp_path / "scoped.npz") as saved:
        scoped = [saved[f"arr_{i}"] for i in range(len(saved.files))]
    _close(scoped, _one_process(model_file)[0].get_weights(), tolerance=0)


def test_backup_and_restore_resumes_mid_epoch_as_if_never_stopped(tmp_path):
    model_file = _model_file(tmp_path, "dropout", WITH_DROPOUT)
    x, y, _ = synthetic_data(kdsl.load_model_file(model_file), SAMPLES)

    def model():
        m = kdsl.load_model_file(model_file)
        m.compile(seed=SEED)
        return m

    uninterrupted = model()
    uninterrupted.fit(x, y, batch_size=BATCH, epochs=3, verbose=0)

    class Interrupt(kdsl.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations == 5:  # epoch 1 (from 0), its second batch
                raise RuntimeError("interrupted")

    backup = kdsl.callbacks.BackupAndRestore(tmp_path / "backup", save_freq=1)
    with pytest.raises(RuntimeError, match="interrupted"):
        model().fit(x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=[backup, Interrupt()])
    resumed = model()  # a new process would build it again: fresh weights, optimizer and generators
    history = resumed.fit(x, y, batch_size=BATCH, epochs=3, verbose=0, callbacks=[backup])
    assert history.epoch == [1, 2]  # epoch 1 resumed after its second batch
    assert resumed.optimizer.iterations == uninterrupted.optimizer.iterations == 9
    _close(resumed.get_weights(), uninterrupted.get_weights(), tolerance=0)
    assert not (tmp_path / "backup").exists()  # delete_checkpoint, as Keras


def test_backup_of_another_model_is_refused_clearly(tmp_path):
    backup_dir = tmp_path / "backup"
    backup_dir.mkdir()
    (backup_dir / "backup.npz").write_bytes(b"not an archive")
    model = kdsl.load_model_file(_model_file(tmp_path, "plain", WITHOUT_BN))
    model.compile(seed=SEED)
    x, y, _ = synthetic_data(model, 8)
    with pytest.raises(KdslError, match="not a readable backup"):
        model.fit(x, y, verbose=0, callbacks=[kdsl.callbacks.BackupAndRestore(backup_dir)])
    with pytest.raises(KdslUnsupportedError, match="double_checkpoint"):
        kdsl.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True)
    with pytest.raises(KdslError, match="save_freq"):
        kdsl.callbacks.BackupAndRestore(backup_dir, save_freq="batch")


# --- two processes (mpiexec -n 2) ------------------------------------------------------------------------------


@needs_mpi
def test_two_replicas_equal_one_process_on_the_global_batch(tmp_path):
    """mnist_lstm (its BatchNormalization left out: see the next test) on global batches of 64, the last of 37
    split 32 / 5, weighted samples: the weights and logs of one process on the same batches, from weights the chief
    alone loaded."""
    model_file = _model_file(tmp_path, "plain", WITHOUT_BN)
    other = kdsl.load_model_file(model_file)
    other.compile(seed=SEED + 1)
    other.save_weights(tmp_path / "start.npz")
    replicas = _trained(2, model_file, tmp_path / "two.npz", "--chief-loads", str(tmp_path / "start.npz"),
                        "--weighted")  # fmt: skip
    one, history = _one_process(model_file, loads=tmp_path / "start.npz", weighted=True)
    _close(replicas, one.get_weights())
    logs = json.loads((tmp_path / "two.json").read_text())
    assert logs["replicas"] == 2
    for key, values in history.items():  # the training loss and accuracy of the global batches
        np.testing.assert_allclose(logs["history"][key], values, rtol=0, atol=1e-5)
    x, y, _ = synthetic_data(one, SAMPLES)
    expected = one.evaluate(x, y, batch_size=SAMPLES - 1, return_dict=True)
    for key, value in expected.items():
        assert abs(logs["evaluate"][key] - value) < 1e-5, key


@needs_mpi
def test_two_replicas_batchnorm_statistics_per_replica(tmp_path):
    """examples/mnist_lstm.kd: BatchNormalization normalizes each replica's shard by its own statistics (Keras's
    default, synchronized=False); replayed here shard by shard, gradients weighed by the shards' sizes and the
    moving statistics averaged."""
    model_file = _model_file(tmp_path, "mnist_lstm")
    replicas = _trained(2, model_file, tmp_path / "two.npz")
    model = kdsl.load_model_file(model_file)
    model.compile(seed=SEED)
    compiled, optimizer = model.trainer.compiled, model.optimizer
    x, y, _ = synthetic_data(model, SAMPLES)
    order = np.random.default_rng(SEED).permutation(SAMPLES)  # fit's shuffling generator, seeded as compile's
    statistics = [i for i, _ in compiled.training.lowered.updates]
    assert statistics, "the model has moving statistics"
    for start in range(0, SAMPLES, BATCH):
        rows = order[start : start + BATCH]
        shards = [rows[: BATCH // 2], rows[BATCH // 2 :]]  # the last batch's: 32 and 5
        before = [compiled.weights[i].copy() for i in statistics]
        grads, updated = [np.zeros_like(g) for g in compiled.grads], []
        for shard in shards:
            for i, value in zip(statistics, before):
                compiled.weights[i][...] = value
            compiled.train_step([x[shard]], [y[shard]])
            grads = [g + len(shard) / len(rows) * new for g, new in zip(grads, compiled.grads)]
            updated.append([compiled.weights[i].copy() for i in statistics])
        for k, i in enumerate(statistics):
            compiled.weights[i][...] = np.mean([u[k] for u in updated], axis=0)
        optimizer.apply([compiled.weights[i] for i in compiled.trainable], grads)
    _close(replicas, model.get_weights())
    statistics_of_the_global_batch = _one_process(model_file)[0].get_weights()  # what the test tells apart
    assert max(np.abs(a - b).max() for a, b in zip(replicas, statistics_of_the_global_batch)) > 1e-3


@needs_mpi
def test_two_replicas_synchronized_batchnorm_equal_one_process(tmp_path):
    """mnist_lstm with `synchronized=True`: the replicas sum their shards' statistics inside the step, and the
    gradients back through them, so two replicas train as one process on the global batches: 64, 64 and 1 (the
    second replica has no rows in the last and takes part in its sums with zeros), samples weighted."""
    model_file = _model_file(tmp_path, "synchronized", "    h     = batch_normalization(h, synchronized=true)\n")
    replicas = _trained(2, model_file, tmp_path / "two.npz", "--samples", "129", "--weighted")
    one, history = _one_process(model_file, weighted=True, samples=129)
    _close(replicas, one.get_weights())
    logs = json.loads((tmp_path / "two.json").read_text())
    for key, values in history.items():
        np.testing.assert_allclose(logs["history"][key], values, rtol=0, atol=1e-5)
    per_replica = _trained(2, _model_file(tmp_path, "per_replica"), tmp_path / "per_replica.npz", "--samples", "129",
                           "--weighted")  # fmt: skip
    assert max(np.abs(a - b).max() for a, b in zip(replicas, per_replica)) > 1e-3  # what the test tells apart


@needs_mpi
def test_two_replicas_dropout_masks_per_replica_replayed_in_one_process(tmp_path):
    model_file = _model_file(tmp_path, "dropout", WITH_DROPOUT)
    replicas = _trained(2, model_file, tmp_path / "two.npz")

    def replayed(model):
        """Each replica's masks for its shard, from its own generator, stacked along the batch: the generators
        derived from the chief's next draw when fit begins, as the strategy derives them."""
        entropy = int(copy.deepcopy(model.state.rng).integers(2**63))
        generators = [replica_generator(entropy, r) for r in range(2)]

        def masks(noise, sizes):
            batch = sizes["batch"]
            shard_sizes = [min(batch, BATCH // 2), max(0, batch - BATCH // 2)]  # the last batch's: 32 and 5
            parts = [
                ModelState.dropout_masks(SimpleNamespace(rng=g), noise, {**sizes, "batch": rows})
                for g, rows in zip(generators, shard_sizes)
            ]
            return [np.concatenate(ms, axis=list(n.var.shape).index("batch")) for n, *ms in zip(noise, *parts)]

        return masks

    replayed_weights = _one_process(model_file, masks=replayed)[0].get_weights()
    _close(replicas, replayed_weights)
    same_masks_everywhere = _one_process(model_file)[0].get_weights()  # what the test tells apart
    assert max(np.abs(a - b).max() for a, b in zip(replicas, same_masks_everywhere)) > 1e-3


@needs_mpi
def test_killed_replica_ends_the_job_and_backup_resumes_it(tmp_path):
    model_file = _model_file(tmp_path, "dropout", WITH_DROPOUT)
    three_epochs = ("--epochs", "3")
    uninterrupted = _trained(2, model_file, tmp_path / "uninterrupted.npz", *three_epochs)
    backup = ("--backup", str(tmp_path / "backup"))
    killed = _launch(2, str(model_file), str(tmp_path / "killed.npz"), *three_epochs, *backup, "--kill-rank", "1",
                     "--kill-at-batch", "2", timeout=120)  # fmt: skip
    ended = time.time()
    assert killed.returncode != 0
    assert not (tmp_path / "killed.npz").exists()
    assert (tmp_path / "backup" / "backup.npz").exists()
    died = float((tmp_path / "killed.npz.killed").read_text())
    assert ended - died < 10, f"the job went on {ended - died:.1f} s after a replica was killed"
    resumed = _trained(2, model_file, tmp_path / "resumed.npz", *three_epochs, *backup)
    _close(resumed, uninterrupted, tolerance=0)
    logs = json.loads((tmp_path / "resumed.json").read_text())
    assert len(logs["history"]["loss"]) == 2  # resumed in epoch 1, not from the start
    assert not (tmp_path / "backup").exists()


@needs_mpi
def test_exception_in_one_replica_aborts_the_job_instead_of_hanging():
    script = """
import numpy as np
from kdsl.distribute import MirroredStrategy
strategy = MirroredStrategy()
if strategy.replica_id == 1:
    raise RuntimeError("replica 1 failed")
strategy.communicator.allreduce(np.zeros(4))  # replica 0 waits here for a replica that is gone
"""
    started = time.perf_counter()
    done = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env=_environment())  # fmt: skip
    assert done.returncode != 0
    assert "replica 1 failed" in done.stderr
    assert time.perf_counter() - started < 30


@needs_mpi
def test_kdsl_train_under_mpiexec_prints_and_saves_once(tmp_path):
    """129 samples in global batches of 64: the last one's single sample leaves replica 1 nothing to train on."""
    rng = np.random.default_rng(0)
    data = tmp_path / "digits.npz"
    images = {k: rng.integers(0, 256, (n, 28, 28)).astype(np.uint8) for k, n in (("x_train", 129), ("x_test", 41))}
    np.savez(data, **images, y_train=rng.integers(0, 10, 129), y_test=rng.integers(0, 10, 41))
    model_file = _model_file(tmp_path, "plain", WITHOUT_BN)
    out = tmp_path / "trained.kdz"
    kdsl_command = Path(sys.executable).parent / "kdsl"
    command = [_mpiexec(), "-n", "2", str(kdsl_command), "train", str(model_file), "--data", str(data),
               "--epochs", "1", "--batch-size", "64", "--verbose", "2", "--out", str(out)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=_environment(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for line in ("data: ", "Epoch 1/1", "test: loss", "saved "):  # the chief's alone
        assert done.stdout.count(line) == 1, done.stdout
    trained = kdsl.load_model(out)
    one = kdsl.load_model_file(model_file)
    one.compile(seed=0)
    with np.load(data) as arrays:
        one.fit(arrays["x_train"] / np.float32(255), arrays["y_train"], batch_size=64, verbose=0)
        expected = one.evaluate(arrays["x_test"] / np.float32(255), arrays["y_test"], batch_size=256)
    _close(trained.get_weights(), one.get_weights())
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("test: loss: ")]
    assert abs(float(line.split()[2]) - expected[0]) < 1e-4, line
