"""Step-independent products hoisted out of time loops: the same values and gradients, less work in the loop."""

import numpy as np
import pytest

from kdsl.ir.builder import Builder
from kdsl.ir.interpret import run_program
from kdsl.ir.ops.linalg import MatMul
from kdsl.ir.ops.scan import Scan
from kdsl.ir.types import TensorType
from kdsl.passes.autodiff import backprop
from kdsl.passes.hoist import hoist_step_independent

STEPS, BATCH, FEATURES, UNITS = 5, 3, 4, 6


def f32(*dims):
    return TensorType("f32", dims)


def minimal_gated_unit(hoisted: bool, reverse: bool = False):
    """h ← f·h + (1 - f)·c, f = σ([x, h]·W + b), c = tanh(x·V): its loss Σ h_T·r and the loss's gradients."""
    b = Builder()
    seq, h0 = b.var(f32(STEPS, BATCH, FEATURES), "seq"), b.var(f32(BATCH, UNITS), "h0")
    w, v, bias = b.var(f32(FEATURES + UNITS, UNITS), "w"), b.var(f32(FEATURES, UNITS), "v"), b.var(f32(UNITS), "b")
    r = b.var(f32(BATCH, UNITS), "r")
    cell = Builder()
    h, x = cell.var(f32(BATCH, UNITS), "h"), cell.var(f32(BATCH, FEATURES), "x")
    cw, cv, cb = cell.var(w.type, "w"), cell.var(v.type, "v"), cell.var(bias.type, "b")
    f = cell.sigmoid(cell.add(cell.matmul(cell.concat(x, h, axis=1), cw), cb))
    c = cell.tanh(cell.matmul(x, cv))
    new = cell.add(cell.mul(f, h), cell.mul(cell.sub(1.0, f), c))
    body = cell.program([h, x, cw, cv, cb], [new, new])
    last, _ = b.scan(h0, seq, w, v, bias, body=body, num_carry=1, num_xs=1, reverse=reverse)
    program = b.program([seq, h0, w, v, bias, r], [])
    if hoisted:
        b.eqns = hoist_step_independent(program).eqns
    loss = b.reduce_sum(b.mul(last, r), axes=(0, 1))
    wrt = program.inputs[:5]
    grads = backprop(b, list(program.eqns), {id(loss): b.const(1.0)}, wrt)
    program.outputs = [loss, *grads]
    program.eqns = b.eqns
    return program


@pytest.mark.parametrize("reverse", [False, True])
def test_hoisted_loop_gives_the_same_values_and_gradients(reverse):
    rng = np.random.default_rng(0)
    plain = minimal_gated_unit(hoisted=False, reverse=reverse)
    arrays = [rng.standard_normal(v.shape) for v in plain.inputs]
    expected = run_program(plain, arrays)
    hoisted = minimal_gated_unit(hoisted=True, reverse=reverse)
    for got, want in zip(run_program(hoisted, arrays), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_only_the_states_products_stay_in_the_loop():
    """x·V and x's part of [x, h]·W run before the loop, over every step; the loop multiplies h alone."""
    program = minimal_gated_unit(hoisted=True)
    (scan,) = [e for e in program.eqns if isinstance(e.op, Scan)][:1]
    body, nc = scan.attrs["body"], scan.attrs["num_carry"]
    products = [e for e in body.eqns if isinstance(e.op, MatMul)]
    assert [p.inputs[0] for p in products] == [body.inputs[0]]  # h·W_h
    assert scan.attrs["num_xs"] == 3  # the sequence, then x·W_x and tanh(x·V) for every step
    outside = [e for e in program.eqns[: program.eqns.index(scan)] if isinstance(e.op, MatMul)]
    assert sorted(e.inputs[1].shape for e in outside) == [(FEATURES, UNITS)] * 2
    assert all(e.inputs[0].shape == (STEPS, BATCH, FEATURES) for e in outside)
    assert nc == 1
