"""Fuzzing the front end: whatever the text, `load` either succeeds or raises a `KdslError` it can render.

Any other exception (an `AttributeError` deep in elaboration, a `RecursionError`, a Lark
exception that slipped through) fails these tests with its traceback.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from kdsl.errors import KdslError
from kdsl.lang import load

EXAMPLES = Path(__file__).parent.parent / "examples"
EXAMPLE_TEXTS = {path.name: path.read_text(encoding="utf-8") for path in sorted(EXAMPLES.glob("*.kd"))}

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

PUNCTUATION = '(){}[],=|>:#"'
ALPHABET = PUNCTUATION + "abcdefghijklmnopqrstuvwxyz_ABCXYZ0123456789.-+\n\t "
TOKENS = [
    *PUNCTUATION, "|>", "->", "\n", "model", "train", "layer", "batch", "f32", "i32", "x", "h", "probs",
    "dense", "lstm(8)", "dense(x, 3)", "bidirectional(gru(4))", "[batch, 3]", "true", "none", "0", "-1",
    "1.5", "1e999", "'s'", '"\\q"', "loss", "weight", "# comment\n", "\u00e9", "\r",
]  # fmt: skip
WORD = re.compile(r"\|>|->|\w+|\S")


def check_load(text: str) -> None:
    """`load` the text; a `KdslError` must render and point inside the text, anything else propagates."""
    note(repr(text))
    try:
        load(text)
    except KdslError as error:
        check_report(error, text)


def check_report(error: KdslError, text: str) -> None:
    rendered = str(error)
    assert rendered.splitlines()[0].endswith(f"{error.kind}: {error.message}".splitlines()[0])
    span = error.span
    if span is None:
        return
    # Lines as the parser counts them (at each \n) or as the renderer does (str.splitlines); the
    # difference is a known bug, tested in test_errors.py::test_rendered_source_line_is_the_line_of_the_error.
    lines = max(text.count("\n") + 1, len(text.splitlines()))
    assert 1 <= span.line <= lines + 1, rendered
    assert span.column >= 1, rendered
    assert (span.end_line, span.end_column) >= (span.line, span.column - 1), rendered
    assert rendered.startswith(f"{span.file}:{span.line}:{span.column}: "), rendered


# --- random text --------------------------------------------------------------------------------


@FUZZ
@given(st.text())
def test_any_text_loads_or_raises_a_kdsl_error(text):
    check_load(text)


@FUZZ
@given(st.text(alphabet=ALPHABET, max_size=200))
def test_punctuation_heavy_text_loads_or_raises_a_kdsl_error(text):
    check_load(text)


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_token_soup_loads_or_raises_a_kdsl_error(tokens):
    check_load(" ".join(tokens))


@FUZZ
@given(st.lists(st.sampled_from(TOKENS), max_size=25))
def test_token_soup_inside_a_model_loads_or_raises_a_kdsl_error(tokens):
    check_load("model M(x: f32[batch, 5, 3], t: i32[batch, 5]) -> y {\n    y = " + " ".join(tokens) + "\n}\n")


# --- mutated examples ---------------------------------------------------------------------------


def delete_slice(draw, text: str) -> str:
    start = draw(st.integers(0, len(text)))
    return text[:start] + text[start + draw(st.integers(1, 40)) :]


def insert(draw, text: str) -> str:
    at = draw(st.integers(0, len(text)))
    piece = draw(st.one_of(st.sampled_from(TOKENS), st.text(alphabet=ALPHABET, min_size=1, max_size=5), st.text()))
    return text[:at] + piece + text[at:]


def duplicate_line(draw, text: str) -> str:
    lines = text.split("\n")
    i = draw(st.integers(0, len(lines) - 1))
    return "\n".join([*lines[: i + 1], lines[i], *lines[i + 1 :]])


def swap_tokens(draw, text: str) -> str:
    words = list(WORD.finditer(text))
    if len(words) < 2:
        return text
    i, j = sorted(draw(st.lists(st.integers(0, len(words) - 1), min_size=2, max_size=2, unique=True)))
    a, b = words[i], words[j]
    return text[: a.start()] + b.group() + text[a.end() : b.start()] + a.group() + text[b.end() :]


MUTATIONS = (delete_slice, insert, duplicate_line, swap_tokens)


@st.composite
def mutated_examples(draw) -> str:
    text = EXAMPLE_TEXTS[draw(st.sampled_from(sorted(EXAMPLE_TEXTS)))]
    for mutate in draw(st.lists(st.sampled_from(MUTATIONS), min_size=1, max_size=3)):
        text = mutate(draw, text)
    return text


def test_examples_load_unmutated():
    assert len(EXAMPLE_TEXTS) >= 5
    for name, text in EXAMPLE_TEXTS.items():
        assert load(text, file=name).models, name


@FUZZ
@given(mutated_examples())
def test_mutated_examples_load_or_raise_a_kdsl_error(text):
    check_load(text)


@pytest.mark.parametrize("mutate", MUTATIONS, ids=lambda m: m.__name__)
@settings(max_examples=50, deadline=None)
@given(data=st.data(), name=st.sampled_from(sorted(EXAMPLE_TEXTS)))
def test_each_mutation_loads_or_raises_a_kdsl_error(mutate, data, name):
    check_load(mutate(data.draw, EXAMPLE_TEXTS[name]))


# --- crashes found by fuzzing -------------------------------------------------------------------

HEADER = "model M(x: f32[batch, 5, 3]) -> y {\n"


@pytest.mark.parametrize(
    "statement",
    ["y = [3]", 'y = ["s"]', "y = lstm(x, 4, initial_state=[3, 4])"],
)
def test_list_of_settings_where_a_tensor_belongs(statement):
    with pytest.raises(KdslError):
        load(HEADER + f"    {statement}\n}}\n")


def test_deeply_nested_calls():
    depth = 400
    with pytest.raises(KdslError):
        load(HEADER + "    y = " + "dense(" * depth + "x" + ", 1)" * depth + "\n}\n")
