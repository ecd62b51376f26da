"""Transposes that undo each other are cancelled (`kdsl.passes.transposes`), and nothing else changes.

Chains of transposes are drawn at random and checked against NumPy's own transposes; a stacked
recurrent model keeps no transpose between its layers.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from kdsl.ir.builder import Builder
from kdsl.ir.interpret import run_program
from kdsl.ir.types import TensorType
from kdsl.lang import load
from kdsl.passes.lower import lower
from kdsl.passes.transposes import cancel_transposes
from kdsl.pipeline import tidy

PERMS = list(itertools.permutations(range(3)))


def _ops(program) -> list[str]:
    return [e.op.name for e in program.eqns]


@given(perms=st.lists(st.sampled_from(PERMS), min_size=1, max_size=4))
def test_a_chain_of_transposes_becomes_at_most_one(perms):
    b = Builder()
    x = b.var(TensorType("f32", (2, 3, 4)), "x")
    y = x
    for perm in perms:
        y = b.transpose(y, perm=perm)
    out = b.mul(y, 2.0)  # exact, so the result must equal NumPy's bit for bit
    size = b.fill(y, value=0.0, lead=1, tail=(5,))  # reads only the leading size of `y`
    program = cancel_transposes(b.program([x], [out, size]))

    value = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    expected = value
    for perm in perms:
        expected = np.transpose(expected, perm)
    actual, filled = run_program(program, [value])
    np.testing.assert_array_equal(actual, 2 * expected)
    assert filled.shape == (expected.shape[0], 5)
    double = next(e for e in program.eqns if e.op.name == "mul")
    maker = next((e for e in program.eqns if any(v is double.inputs[0] for v in e.outputs)), None)
    if maker is None:  # the chain cancelled: the product reads the input itself
        assert double.inputs[0] is x
    else:
        assert maker.op.name == "transpose" and maker.inputs[0] is x


def test_stacked_recurrent_layers_pass_sequences_without_transposing():
    text = """model Stack(x: f32[batch, 6, 3]) -> y {
        y = gru(x, 4, return_sequences=true) |> simple_rnn(5) |> dense(2)
    }"""
    program = tidy(lower(load(text, "stack.kd").models["Stack"])).program
    # one transpose remains: the input, to time-major
    assert _ops(program).count("transpose") == 1
