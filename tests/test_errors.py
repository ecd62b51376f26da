"""Error reporting: every mistake in a `.kd` file is a `KdslError` of the right kind, at the right place.

Each test writes a small model with one mistake and checks the error's class, its line and
column (1-based), and a word of its message or hint. Positions are found by searching the
source for the offending text, so the expectations read as "the error points at `lstn`".
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kdsl.errors import (
    KdslArgumentError,
    KdslError,
    KdslNameError,
    KdslShapeError,
    KdslSyntaxError,
    KdslUnsupportedError,
)
from kdsl.lang import load

EXAMPLES = Path(__file__).parent.parent / "examples"
HEADLINE = (EXAMPLES / "headline.kd").read_text(encoding="utf-8")


# --- helpers ------------------------------------------------------------------------------------


def model(body: str, inputs: str = "x: f32[batch, 4]", outputs: str = "y") -> str:
    """A one-model file `M`; `body` holds its statements, one per line (indented here by four spaces)."""
    lines = [f"model M({inputs}) -> {outputs} {{", *(f"    {line}" for line in body.splitlines()), "}"]
    return "\n".join(lines) + "\n"


def with_train(text: str, *settings: str, name: str = "M") -> str:
    return text + f"\ntrain {name} {{\n" + "".join(f"    {s}\n" for s in settings) + "}\n"


def position(text: str, needle: str, occurrence: int = 1) -> tuple[int, int]:
    """The 1-based line and column where the `occurrence`-th `needle` starts."""
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    line = text.count("\n", 0, index) + 1
    column = index - (text.rfind("\n", 0, index) + 1) + 1
    return line, column


def error_of(text: str) -> KdslError:
    with pytest.raises(KdslError) as info:
        load(text)
    return info.value


def check(error: KdslError, kind: type[KdslError], at: tuple[int, int], message: str = "", hint: str = "") -> KdslError:
    """The error is exactly of `kind`, starts at `at` and mentions the words given."""
    assert type(error) is kind, f"{type(error).__name__}: {error}"
    assert error.span is not None, str(error)
    assert (error.span.line, error.span.column) == at, str(error)
    assert message in error.message, str(error)
    assert hint in (error.hint or ""), str(error)
    return error


def expect(text: str, kind: type[KdslError], needle: str, message: str = "", hint: str = "", occurrence: int = 1):
    """Load `text` and check the error points at the `occurrence`-th `needle`."""
    return check(error_of(text), kind, position(text, needle, occurrence), message, hint)


def caret_column(rendered: str) -> int:
    """The 1-based column the `^` line of a rendered error points at (source lines are indented 4)."""
    carets = [line for line in rendered.splitlines() if line.strip() and set(line.strip()) == {"^"}]
    assert len(carets) == 1, rendered
    return carets[0].index("^") - 4 + 1


# --- names --------------------------------------------------------------------------------------


def test_misspelled_layer_points_at_the_callee():
    text = model("h = lstn(x, units=64)\ny = dense(h, 10)", inputs="x: f32[batch, 28, 28]")
    error = expect(text, KdslNameError, "lstn", "unknown layer `lstn`", "did you mean `lstm`")
    assert error.span.end_column == error.span.column + len("lstn") - 1


def test_misspelled_layer_renders_file_line_source_caret_and_hint():
    text = model("h = lstn(x, units=64)\ny = dense(h, 10)", inputs="x: f32[batch, 28, 28]")
    error = error_of(text)
    line, column = position(text, "lstn")
    lines = str(error).splitlines()
    assert lines[0] == f"<string>:{line}:{column}: name error: unknown layer `lstn`"
    assert lines[1] == "    " + text.splitlines()[line - 1]
    assert lines[2] == "    " + " " * (column - 1) + "^^^^"
    assert lines[3] == "hint: did you mean `lstm`?"


def test_error_renders_the_file_name_given_to_load():
    with pytest.raises(KdslNameError) as info:
        load(model("y = lstn(x, 8)"), file="nets/m.kd")
    assert str(info.value).startswith("nets/m.kd:2:9: name error:")


def test_misspelled_argument_suggests_the_real_one():
    text = model("y = lstm(x, unit=64)", inputs="x: f32[batch, 28, 28]")
    error = error_of(text)
    assert type(error) is KdslArgumentError
    assert error.span.line == 2
    assert "no argument `unit`" in error.message
    assert "did you mean `units`" in error.hint


@pytest.mark.parametrize(
    "call, keyword",
    [
        ("lstm(x, unit=64)", "unit"),
        ("lstm(x, 8, unroll=true)", "unroll"),
        ("dense(x, 8, kernel_constraint=max_norm(2))", "kernel_constraint"),
    ],
)
def test_unknown_keyword_error_points_at_the_keyword(call, keyword):
    text = model(f"y = {call}", inputs="x: f32[batch, 5, 4]")
    span = error_of(text).span
    assert (span.line, span.column) == position(text, keyword)


def test_unknown_tensor_suggests_a_defined_one():
    text = model("h = dense(x, 8)\ny = dense(hh, 10)")
    expect(text, KdslNameError, "hh", "unknown tensor `hh`", "did you mean `h`")


def test_tensor_used_as_a_layer():
    text = model("h = dense(x, 8)\ny = x |> h")
    expect(text, KdslArgumentError, "h\n", "`h` is a tensor")


def test_output_never_assigned():
    text = model("h = dense(x, 8)", outputs="probs")
    expect(text, KdslNameError, "probs", "never assigned")


def test_train_block_for_unknown_model():
    text = with_train(model("y = dense(x, 8)").replace("model M", "model Mnist"), "loss = mse", name="Minst")
    expect(text, KdslNameError, "Minst", "unknown model `Minst`", "did you mean `Mnist`")


@pytest.mark.parametrize(
    "setting, needle, message, hint",
    [
        ("loss = mean_squared_eror", "mean_squared_eror", "unknown loss", "did you mean `mean_squared_error`"),
        ("optimizer = adamm(0.1)", "adamm", "unknown optimizer `adamm`", "did you mean `adam`"),
        ("metrics = [accuracy, acuracy]", "acuracy]", "unknown metric `acuracy`", "did you mean `accuracy`"),
    ],
)
def test_unknown_training_function(setting, needle, message, hint):
    settings = [setting] if setting.startswith("loss") else ["loss = mse", setting]
    text = with_train(model("y = dense(x, 8)"), *settings)
    expect(text, KdslArgumentError, needle, message, hint)


@pytest.mark.parametrize(
    "call, argument, hint",
    [
        ("lstm(x, 8, time_major=true)", "time_major", "(batch, timesteps, features)"),
        ("gru(x, 8, unroll=true)", "unroll", "remove `unroll`"),
        ("simple_rnn(x, 8, kernel_constraint=max_norm(2))", "kernel_constraint", "constraints"),
        ("dense(x, 8, kernel_constraint=max_norm(2))", "kernel_constraint", "constraints"),
    ],
)
def test_unsupported_arguments_are_refused(call, argument, hint):
    text = model(f"y = {call}", inputs="x: f32[batch, 5, 4]")
    error = error_of(text)
    assert type(error) is KdslUnsupportedError, str(error)
    assert f"`{argument}` is not supported" in error.message
    assert hint in error.hint
    # Somewhere inside `name=value`; the exact column is checked above.
    written = call[call.index(argument) : -1]
    line, start = position(text, written)
    assert error.span.line == line
    assert start <= error.span.column < start + len(written)


# --- shapes -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "inputs", "needle", "message", "hint"),
    [
        ("y = add(a, b)", "a: f32[batch, 3], b: f32[batch, 4]", "add(", "(None, 3) and (None, 4)", ""),
        (
            "y = concatenate(a, b)",
            "a: f32[batch, 5, 3], b: f32[batch, 4, 3]",
            "concatenate(",
            "(None, 5, 3) and (None, 4, 3)",
            "",
        ),
        (
            "y = concatenate(a, b)",
            "a: f32[batch, 5, 3], b: f32[batch, 3]",
            "concatenate(",
            "(None, 5, 3) and (None, 3)",
            "",
        ),
        ("y = dense(ids, 4)", "ids: i32[batch, 3]", "dense(", "expects f32", "embedding"),
        ("y = embedding(x, 10, 4)", "x: f32[batch, 3]", "embedding(", "expects i32", "i32[batch"),
        ("y = lstm(x, 4)", "x: f32[batch, 3]", "lstm(", "rank-3", ""),
    ],
    ids=["add", "concatenate-off-axis", "concatenate-ranks", "dense-on-i32", "embedding-on-f32", "lstm-on-rank-2"],
)
def test_shape_mismatch_points_at_the_call(statement, inputs, needle, message, hint):
    expect(model(statement, inputs=inputs), KdslShapeError, needle, message, hint)


def test_shape_error_inside_a_pipeline_points_at_the_failing_stage():
    text = model("y = x |> dense(8) |> lstm(4)", inputs="x: f32[batch, 3]")
    expect(text, KdslShapeError, "lstm(", "rank-3")


def test_declared_output_type_must_match_the_inferred_one():
    text = model("probs = dense(x, 10, activation=softmax)", outputs="probs: f32[batch, 5]")
    error = expect(text, KdslShapeError, "probs:", "declared f32[batch, 5]")
    assert "computes f32[batch, 10]" in error.message


def test_declared_output_type_that_matches_is_accepted():
    text = model("probs = dense(x, 10, activation=softmax)", outputs="probs: f32[batch, 10]")
    assert load(text).model().outputs[0].type.dims == ("batch", 10)


def test_reshape_with_wrong_element_count():
    text = model("y = reshape(x, target_shape=[5, 2])", inputs="x: f32[batch, 3, 4]")
    expect(text, KdslShapeError, "reshape(", "12 elements")


def test_shared_layer_on_different_feature_sizes():
    text = model(
        "layer enc = lstm(8)\ny = enc(a)\nz = enc(b)",
        inputs="a: f32[batch, 5, 3], b: f32[batch, 5, 4]",
        outputs="(y, z)",
    )
    error = expect(text, KdslShapeError, "enc(b)", "shared layer `enc`", "same feature size")
    assert "(None, 5, 4)" in error.message


def test_shared_layer_on_equal_feature_sizes_shares_weights():
    text = model(
        "layer enc = lstm(8)\ny = enc(a)\nz = enc(b)",
        inputs="a: f32[batch, 5, 3], b: f32[batch, 7, 3]",
        outputs="(y, z)",
    )
    graph = load(text).model()
    assert [layer.name for layer in graph.layers()] == ["enc"]
    assert graph.param_count() == 4 * (3 * 8 + 8 * 8 + 8)


def test_input_without_batch_dimension():
    text = model("y = dense(x, 8)", inputs="x: f32[4]")
    expect(text, KdslShapeError, "f32[4]", "batch dimension")


def test_unknown_element_type():
    text = model("y = dense(x, 8)", inputs="x: f23[batch, 4]")
    expect(text, KdslNameError, "f23", "unknown element type", "did you mean `f32`")


# --- syntax -------------------------------------------------------------------------------------


def expect_syntax_error(text: str, needle: str, message: str, hint: str = "", occurrence: int = 1) -> KdslError:
    """A syntax error at `needle`, with the caret of its rendering under that same column."""
    error = expect(text, KdslSyntaxError, needle, message, hint, occurrence)
    line, column = position(text, needle, occurrence)
    rendered = str(error)
    assert rendered.splitlines()[1] == "    " + text.splitlines()[line - 1]
    assert caret_column(rendered) == column
    return error


def test_missing_comma_between_arguments():
    expect_syntax_error(model("y = dense(x 10)"), "10", "unexpected `10`", "`,` between arguments")


def test_missing_comma_between_keyword_arguments():
    text = model("y = dense(x, 10 activation=relu)")
    expect_syntax_error(text, "activation", "unexpected `activation`", "`,` between arguments")


def test_unclosed_brace_points_at_the_brace():
    text = "model M(x: f32[batch, 4]) -> y {\n    y = dense(x, 8)\n"
    expect_syntax_error(text, "{", "`{` is never closed", "`}`")


def test_unclosed_parenthesis_at_end_of_file_points_at_it():
    text = "model M(x: f32[batch, 4]) -> y {\n    y = dense(x, 8\n"
    expect_syntax_error(text, "(x, 8", "`(` is never closed", "`)`")


def test_unclosed_parenthesis_before_the_closing_brace():
    text = model("y = dense(x, 8\n")
    expect_syntax_error(text, "}", "unexpected `}`", "`)`")


def test_unclosed_train_block():
    text = model("y = dense(x, 8)") + "train M {\n    loss = mse\n"
    expect_syntax_error(text, "{", "`{` is never closed", occurrence=2)


def test_stray_character():
    expect_syntax_error(model("h = dense(x, 8)\ny = dense($h, 4)"), "$", "unexpected character '$'")


def test_stray_character_after_a_tab_keeps_the_caret_aligned():
    text = model("h = dense(x, 8)\n\ty = dense(h, 4) $")
    error = error_of(text)
    assert (error.span.line, error.span.column) == position(text, "$")
    assert caret_column(str(error)) == position(text, "$")[1]


def test_missing_equals_sign():
    expect_syntax_error(model("h = dense(x, 8)\ny dense(h, 4)"), "dense(h", "unexpected `dense`", "`=`")


def test_missing_arrow():
    expect_syntax_error("model M(x: f32[batch, 4]) y {\n    y = dense(x, 8)\n}\n", "y {", "unexpected `y`", "`->`")


def test_empty_file_is_an_empty_program():
    assert load("").models == {}
    assert load("# nothing here\n").models == {}


def test_unterminated_string():
    expect_syntax_error(model('y = dense(x, 8, name="enc)'), '"', "unexpected character")


@pytest.mark.parametrize("separator", ["\f", "\r", "\u2028"])
def test_rendered_source_line_is_the_line_of_the_error(separator):
    text = f"# one{separator}comment\n" + model("y = dense(x, 8) $")
    error = error_of(text)
    assert (error.span.line, error.span.column) == position(text, "$")
    assert str(error).splitlines()[1] == "    " + text.split("\n")[error.span.line - 1]


# --- several models, train blocks ---------------------------------------------------------------

TWO_MODELS = (
    model("y = dense(x, 3)").replace("model M", "model Small")
    + model("y = x |> dense(16) |> dense(3)").replace("model M", "model Big")
    + "\ntrain Big {\n    loss = mse\n    optimizer = sgd(0.1)\n}\n"
)


def test_several_models_in_one_file():
    program = load(TWO_MODELS)
    assert list(program.models) == ["Small", "Big"]
    assert program.model("Small").param_count() == 4 * 3 + 3
    assert program.model("Big").param_count() == (4 * 16 + 16) + (16 * 3 + 3)
    assert program.model("Small").train is None
    assert program.model("Big").train.optimizer.args["learning_rate"] == 0.1


def test_model_without_a_name_is_ambiguous_in_a_file_of_several():
    with pytest.raises(KdslNameError, match="2 models"):
        load(TWO_MODELS).model()


def test_unknown_model_name_suggests_one():
    with pytest.raises(KdslNameError) as info:
        load(TWO_MODELS).model("Bigg")
    assert "did you mean `Big`" in info.value.hint


def test_model_defined_twice():
    text = model("y = dense(x, 3)") + model("y = dense(x, 4)")
    expect(text, KdslNameError, "M(", "defined twice", occurrence=2)


def test_per_output_losses_and_weights():
    train = load(HEADLINE).model("Headline").train
    assert set(train.losses) == {"main", "aux"}
    assert train.losses["main"].loss.name == "binary_crossentropy"
    assert train.losses["main"].weight == 1.0
    assert train.losses["aux"].weight == 0.2


def test_loss_weight_defaults_to_one():
    text = HEADLINE.replace(", weight 1.0", "")
    assert load(text).model().train.losses["main"].weight == 1.0


def test_loss_for_an_output_the_model_lacks():
    text = HEADLINE.replace("loss aux ", "loss auxx")
    expect(text, KdslNameError, "auxx", "no output `auxx`", "did you mean `aux`")


def test_output_without_a_loss():
    text = HEADLINE.replace("    loss aux  = binary_crossentropy, weight 0.2\n", "")
    expect(text, KdslArgumentError, "Headline {", "output `aux` has no loss", "loss aux =")


def test_same_output_given_two_losses():
    text = HEADLINE.replace("loss aux ", "loss main")
    expect(text, KdslArgumentError, "loss main", "given twice", occurrence=2)


def test_loss_for_all_outputs_and_one_output_do_not_mix():
    text = HEADLINE.replace("loss aux ", "loss    ")
    expect(text, KdslArgumentError, "loss    ", "either once for all outputs or per output")


def test_train_block_without_loss():
    text = with_train(model("y = dense(x, 8)"), "optimizer = sgd")
    expect(text, KdslArgumentError, "M {", "has no `loss`", "loss =")


def test_negative_loss_weight():
    text = HEADLINE.replace("weight 0.2", "weight -0.2")
    expect(text, KdslArgumentError, "-0.2", "weight")


def test_unknown_loss_option():
    text = HEADLINE.replace("weight 0.2", "wieght 0.2")
    expect(text, KdslArgumentError, "wieght", "unknown option `wieght`", "`weight`")


def test_two_train_blocks_for_one_model():
    text = with_train(with_train(model("y = dense(x, 8)"), "loss = mse"), "loss = mae")
    expect(text, KdslNameError, "M {", "two train blocks", occurrence=2)


@pytest.mark.parametrize("body", ["y = x", "h, y = [x, x]"])
def test_a_statement_that_only_renames_is_refused(body):
    expect(model(body), KdslArgumentError, body, "only gives another name", "first name")
