"""The kernel cache runs only what kdsl generated: planted, edited, truncated or empty modules and Numba files
are rebuilt, a cache folder others can write is refused, and one that cannot be written is replaced."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import kdsl
from kdsl import layers as L
from kdsl.errors import KdslError

X = np.random.default_rng(0).normal(size=(5, 6)).astype(np.float32)


def _predict(cache: Path, monkeypatch) -> np.ndarray:
    """Predictions of a small model with fixed weights, as a fresh process would compute them from `cache`."""
    monkeypatch.setenv("KDSL_CACHE_DIR", str(cache))
    for name in [name for name in sys.modules if name.startswith("kdsl_generated_")]:
        del sys.modules[name]
    x = kdsl.Input(shape=(6,))
    model = kdsl.Model(x, L.Dense(3)(L.Dense(4, activation="tanh")(x)))
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model.predict(X, verbose=0)


def _reference(model_weights_seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(model_weights_seed)
    w1, b1, w2, b2 = (rng.normal(size=s).astype(np.float32) for s in [(6, 4), (4,), (4, 3), (3,)])
    return np.tanh(X.astype(np.float64) @ w1 + b1) @ w2 + b2


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    np.testing.assert_allclose(_predict(folder, monkeypatch), _reference(), rtol=1e-5, atol=1e-5)
    assert list(folder.glob("kdsl_*.py")) and list((folder / "__pycache__").glob("*.nbc"))
    return folder


def test_a_new_cache_folder_is_private(cache):
    assert cache.stat().st_mode & 0o777 == 0o700


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: "raise SystemExit('planted')\n" + text,
        lambda text: text.replace("0.5", "0.65", 1) + "\nPLANTED = True\n",
        lambda text: text[: len(text) // 2],
        lambda text: "",
    ],
    ids=["planted", "edited", "truncated", "empty"],
)
def test_a_damaged_module_is_written_again_not_run(cache, monkeypatch, damage):
    for module in cache.glob("kdsl_*.py"):
        module.write_text(damage(module.read_text()))
    np.testing.assert_allclose(_predict(cache, monkeypatch), _reference(), rtol=1e-5, atol=1e-5)
    assert not any(getattr(m, "PLANTED", False) for n, m in sys.modules.items() if n.startswith("kdsl_generated_"))


@pytest.mark.parametrize("suffix", [".nbc", ".nbi"])
@pytest.mark.parametrize("cut", [0, 0.5])
def test_a_damaged_numba_file_is_compiled_again(cache, monkeypatch, suffix, cut):
    files = list((cache / "__pycache__").glob(f"*{suffix}"))
    for file in files:
        data = file.read_bytes()
        file.write_bytes(data[: int(len(data) * cut)])
    np.testing.assert_allclose(_predict(cache, monkeypatch), _reference(), rtol=1e-5, atol=1e-5)
    assert all(file.stat().st_size > 0 for file in (cache / "__pycache__").glob(f"*{suffix}"))


def test_a_numba_file_others_can_write_is_not_unpickled(cache, monkeypatch):
    planted = sorted((cache / "__pycache__").glob("*.nbc"))[0]
    planted.chmod(0o666)
    _predict(cache, monkeypatch)
    assert not planted.exists() or planted.stat().st_mode & 0o022 == 0


def test_a_cache_folder_others_can_write_is_refused(cache, monkeypatch):
    cache.chmod(0o777)
    with pytest.raises(KdslError, match="other users can write") as error:
        _predict(cache, monkeypatch)
    assert "chmod 700" in error.value.hint


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="giving a folder away needs root")
def test_a_cache_folder_of_another_user_is_refused(cache, monkeypatch):
    os.chown(cache, 4242, -1)
    with pytest.raises(KdslError, match="belongs to another user"):
        _predict(cache, monkeypatch)


def test_a_cache_that_cannot_be_written_falls_back_to_a_private_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="cannot write the kernel cache"):
        got = _predict(blocker / "cache", monkeypatch)
    np.testing.assert_allclose(got, _reference(), rtol=1e-5, atol=1e-5)


SGD_STEP = """
import numpy as np
from kdsl.runtime.update_loops import HOST_LOOPS
w, g, m = np.ones(4, np.float32), np.ones(4, np.float32), np.zeros(4, np.float32)
HOST_LOOPS["sgd"]((w,), (g,), (m,), np.float32(0.25), np.float32(0), False)
print(w[0])
"""


def test_an_edited_rule_is_not_run_from_a_warm_cache(tmp_path):
    """The update loops inline `update_rules` from another file: editing it must reach the compiled loop."""
    shutil.copytree(Path(kdsl.__file__).parent, tmp_path / "kdsl", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "NUMBA_CACHE_DIR": ""}

    def step() -> float:
        run = subprocess.run([sys.executable, "-c", SGD_STEP], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        return float(run.stdout)

    assert step() == 0.75
    rules = tmp_path / "kdsl" / "runtime" / "update_rules.py"
    rules.write_text(rules.read_text().replace("w[i] = w[i] - lr * grad\n", "w[i] = w[i] - 2 * lr * grad\n", 1))
    assert step() == 0.5


def test_models_of_one_structure_share_their_kernels_whatever_their_names(cache, monkeypatch):
    first = sorted(cache.glob("kdsl_*.py"))
    _predict(cache, monkeypatch)  # a second model, named `functional_<n>` as Keras numbers them
    assert sorted(cache.glob("kdsl_*.py")) == first
