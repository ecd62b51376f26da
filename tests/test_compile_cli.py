"""`kdsl compile`: the standalone module it writes, --explain and the fused IR it prints."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from kdsl.cli import main
from kdsl.lang import load_file
from kdsl.pipeline import compile_model

STANDALONE = """
import json, sys
import numpy as np
import MnistLSTM
assert "kdsl" not in sys.modules, "the module must not need kdsl"
metadata = json.load(open("MnistLSTM.json"))
weights = np.load("MnistLSTM.npz")
x = np.load("x.npy")
(probs,) = MnistLSTM.forward(x, *(weights[p["name"]] for p in metadata["params"]))
np.save("probs.npy", probs)
"""


def test_standalone_module_runs_without_kdsl(tmp_path, examples, capsys):
    assert main(["compile", str(examples / "mnist_lstm.kd"), "-o", str(tmp_path)]) == 0
    assert "MnistLSTM.py" in capsys.readouterr().out
    metadata = json.loads((tmp_path / "MnistLSTM.json").read_text())
    assert [p["name"] for p in metadata["params"]][:3] == ["lstm/kernel", "lstm/recurrent_kernel", "lstm/bias"]
    assert metadata["functions"]["train_step"]["results"][0] == "loss"
    x = np.random.default_rng(0).standard_normal((3, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", STANDALONE], cwd=tmp_path, check=True, timeout=300)
    probs = np.load(tmp_path / "probs.npy")

    reference = compile_model(load_file(examples / "mnist_lstm.kd").models["MnistLSTM"], target="numpy")
    weights = np.load(tmp_path / "MnistLSTM.npz")
    reference.weights = [weights[name] for name in reference.param_names]
    np.testing.assert_allclose(probs, reference.forward(x)[0], rtol=1e-5, atol=1e-6)


FORWARD = """
import json, sys
import numpy as np
weights = np.load("kernels/MnistMLP.npz")
params = json.load(open("kernels/MnistMLP.json"))["params"]
(probs,) = module.forward(np.load("x.npy"), *(weights[p["name"]] for p in params))
np.save(sys.argv[1], probs)
"""

BY_FILE = (
    """
import importlib.util
spec = importlib.util.spec_from_file_location("model", "kernels/MnistMLP.py")
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)  # neither registered in sys.modules nor its folder on sys.path
"""
    + FORWARD
)

BY_IMPORT = (
    """
import sys
sys.path.append("kernels")
import MnistMLP as module
"""
    + FORWARD
)


def test_standalone_module_loads_from_its_file_however_it_is_loaded(tmp_path, examples):
    """Loaded from its file under another name, then imported, then from its file again: each run finds its
    support package beside it and none leaves a disk cache that a later one cannot load."""
    assert main(["compile", str(examples / "mnist_mlp.kd"), "-o", str(tmp_path / "kernels")]) == 0
    x = np.random.default_rng(0).standard_normal((3, 28, 28)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    for i, script in enumerate([BY_FILE, BY_IMPORT, BY_FILE]):
        run = subprocess.run([sys.executable, "-c", script, f"{i}.npy"], cwd=tmp_path, capture_output=True, text=True)
        assert run.returncode == 0, run.stderr

    reference = compile_model(load_file(examples / "mnist_mlp.kd").models["MnistMLP"], target="numpy")
    weights = np.load(tmp_path / "kernels" / "MnistMLP.npz")
    reference.weights = [weights[name] for name in reference.param_names]
    for i in range(3):
        np.testing.assert_allclose(np.load(tmp_path / f"{i}.npy"), reference.forward(x)[0], rtol=1e-5, atol=1e-6)


def test_explain_names_kernels_and_fallbacks(tmp_path, capsys):
    path = tmp_path / "m.kd"
    path.write_text(
        "model M(x: f32[batch, 5, 3]) -> y {\n"
        "    y = lstm(x, 8, recurrent_dropout=0.2) |> dense(2, activation=softmax)\n"
        "}\n"
        "train M { loss = sparse_categorical_crossentropy\n optimizer = sgd() }\n"
    )
    assert main(["compile", str(path), "--explain", "--batch", "16"]) == 0
    out = capsys.readouterr().out
    assert "costs at batch size 16" in out
    assert "one compiled time loop (forwards)" in out and "one compiled time loop (backwards)" in out
    assert "recurrent_dropout > 0" in out
    assert "matmul_tn through BLAS" in out  # weight gradients summed over time in one GEMM
    assert "a loop this short does not pay for preparing the weight" in out  # 5 steps


def test_explain_says_how_a_long_loop_multiplies(examples, capsys):
    assert main(["compile", str(examples / "mnist_lstm.kd"), "--explain"]) == 0  # 28 steps
    out = capsys.readouterr().out
    assert out.count("matmul by the weight prepared before the loop") == 3  # forward, step's forward and backward


def test_emit_ir_shows_fused_loops(examples, capsys):
    assert main(["compile", str(examples / "mnist_lstm.kd"), "--emit", "ir"]) == 0
    out = capsys.readouterr().out
    assert "# forward: lowered and fused" in out and "# train_step: lowered and fused" in out
    assert "loop over (batch, 64):" in out
    assert "scan[" in out and "(no code: a view)" in out


def test_train_evaluate_predict_on_the_shipped_sample(tmp_path, examples, capsys):
    saved = tmp_path / "digits.kdz"
    args = ["train", str(examples / "mnist_mlp.kd"), "--epochs", "2", "--target", "numpy", "--out", str(saved)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and f"saved {saved}" in out
    accuracy = float(out.split("test: ")[1].split("accuracy: ")[1].split()[0])
    assert accuracy > 0.8  # 2,000 real digits, two epochs
    assert main(["evaluate", str(saved)]) == 0
    assert f"accuracy: {accuracy:.4f}" in capsys.readouterr().out
    assert main(["predict", str(saved), "--out", str(tmp_path / "p.npy")]) == 0
    predictions = np.load(tmp_path / "p.npy")
    assert predictions.shape == (500, 10)
    np.testing.assert_allclose(predictions.sum(axis=1), 1, rtol=1e-5)


def test_train_refuses_an_unknown_dataset(examples, capsys):
    assert main(["train", str(examples / "mnist_mlp.kd"), "--data", "cifar"]) == 1
    assert "no dataset 'cifar'" in capsys.readouterr().err
