"""The `kdsl` command: exit codes, messages and the numbers Keras prints for the same models."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from kdsl.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def param_column(summary: str) -> list[int]:
    rows = [line for line in summary.splitlines() if line.startswith("│")]
    return [int(row.split("│")[3].strip().replace(",", "")) for row in rows]


def test_checking_and_summarizing_do_not_import_the_compiler(examples):
    """`kdsl check` and `kdsl summary` answer an editor quickly: Numba and SciPy load only to compile or train."""
    model = str(examples / "gru_stack.kd")
    code = (
        "import sys; from kdsl.cli import main; "
        f"assert main(['check', {model!r}]) == main(['summary', {model!r}]) == 0; "
        "print(sorted({'numba', 'scipy'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize(
    ("example", "per_layer", "total"),
    [
        ("gru_stack.kd", [64_000, 247_296, 49_280, 1_290], "361,866"),
        ("text_lstm.kd", [64_000, 98_816, 1_290], "164,106"),
        ("fashion_mlp.kd", [0, 235_500, 30_100, 1_010], "266,610"),
        ("mnist_lstm.kd", [23_808, 256, 650], "24,714"),
    ],
)
def test_summary_reports_keras_parameter_counts(capsys, examples, example, per_layer, total):
    code, out, _ = run(capsys, "summary", str(examples / example))
    assert code == 0
    assert param_column(out) == per_layer
    assert f"Total params: {total} (" in out


def test_summary_separates_non_trainable_batch_norm_statistics(capsys, examples):
    _, out, _ = run(capsys, "summary", str(examples / "mnist_lstm.kd"))
    assert "Trainable params: 24,586 (96.04 KB)" in out
    assert "Non-trainable params: 128 (512.00 B)" in out
    assert "(None, 64)" in out


def test_summary_of_functional_model_lists_inputs_and_connections(capsys, examples):
    _, out, _ = run(capsys, "summary", str(examples / "headline.kd"), "--ascii")
    assert "words (InputLayer)" in out and "extra (InputLayer)" in out
    assert re.search(r"concatenate \(Concatenate\).*encoder\[0\]\[0\], extra\[0\]\[0\]", out)
    assert "┃" not in out


@pytest.mark.parametrize(
    ("file", "kind", "where"),
    [
        ("misspelled_layer.kd", "name error", ":3:13:"),
        ("shape_mismatch.kd", "shape error", ":5:9:"),
        ("syntax_error.kd", "syntax error", ":3:17:"),
    ],
)
def test_check_fails_with_line_and_column(capsys, data, file, kind, where):
    code, out, err = run(capsys, "check", str(data / file))
    assert code == 1
    assert out == ""
    assert f"{data / file}{where} {kind}" in err
    assert "^" in err and "hint:" in err


def test_check_points_caret_under_the_misspelled_layer(capsys, data):
    _, _, err = run(capsys, "check", str(data / "misspelled_layer.kd"))
    lines = err.splitlines()
    source, caret = lines[1], lines[2]
    assert source.strip() == "h     = lstn(pixels, units=64)"
    assert source[caret.index("^") : caret.rindex("^") + 1] == "lstn"
    assert "did you mean `lstm`?" in err


def test_shape_mismatch_names_both_shapes(capsys, data):
    _, _, err = run(capsys, "check", str(data / "shape_mismatch.kd"))
    assert "(None, 32)" in err and "(None, 64)" in err


def test_check_passes_every_example(capsys, examples):
    files = sorted(str(p) for p in examples.glob("*.kd"))
    code, out, err = run(capsys, "check", *files)
    assert code == 0, err
    assert out.count(": ok") == len(files)


def test_check_of_missing_file_is_an_error_not_a_traceback(capsys, tmp_path):
    code, _, err = run(capsys, "check", str(tmp_path / "nope.kd"))
    assert code == 1
    assert "cannot read" in err and "Traceback" not in err


@pytest.mark.parametrize("emit", ["ast", "ir", "kd"])
def test_compile_emits_each_stage(capsys, examples, emit):
    code, out, _ = run(capsys, "compile", str(examples / "mnist_lstm.kd"), "--emit", emit)
    assert code == 0
    expected = {"ast": "ModelDef", "ir": "%probs: f32[batch, 10]", "kd": "model MnistLSTM(pixels: f32[batch, 28, 28])"}
    assert expected[emit] in out


def test_ir_shows_parameters_in_keras_layout(capsys, examples):
    _, out, _ = run(capsys, "compile", str(examples / "gru_stack.kd"), "--emit", "ir")
    assert "kernel: f32[64, 768]" in out
    assert "recurrent_kernel: f32[256, 768]" in out
    assert "bias: f32[2, 768]" in out


def test_layers_lists_the_catalogue_and_one_layers_arguments(capsys):
    _, out, _ = run(capsys, "layers")
    assert {"dense", "lstm", "gru", "bidirectional", "repeat_vector"} <= {line.split()[0] for line in out.splitlines()}
    _, out, _ = run(capsys, "layers", "GRU")
    assert "reset_after" in out and "stateful" in out
    code, _, err = run(capsys, "layers", "lstn")
    assert code == 1 and "did you mean `lstm`" in err


@pytest.mark.parametrize("command", [[], ["check"], ["summary"], ["compile"], ["layers"]])
def test_every_command_has_help(capsys, command):
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: kdsl" in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("kdsl") is None, reason="the kdsl console script is not installed")
def test_installed_console_script_runs(examples):
    result = subprocess.run(
        ["kdsl", "summary", str(examples / "text_lstm.kd")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "Total params: 164,106" in result.stdout


@pytest.mark.parametrize(
    "argv, expected",
    [(["train", "examples/mnist_mlp.kd", "--data", "mnsit"], "did you mean `mnist`"),
     (["train", "examples/mnist_mlp.kd", "--data", "missing.npz"], "no file missing.npz"),
     (["evaluate", "missing.kdz"], "no such file"),
     (["evaluate", "examples/mnist_mlp.kd"], "train it first")],
)  # fmt: skip
def test_a_new_users_mistakes_get_a_message_not_an_internal_error(capsys, argv, expected):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert expected in err and "internal error" not in err
