"""Products of the state by several weights in a time loop, merged into one: the same values and gradients."""

import numpy as np

from kdsl.ir.builder import Builder
from kdsl.ir.interpret import run_program
from kdsl.ir.ops.linalg import MatMul
from kdsl.ir.ops.scan import Scan
from kdsl.ir.types import TensorType
from kdsl.passes.autodiff import backprop
from kdsl.passes.merge_products import merge_products

STEPS, BATCH, FEATURES, UNITS = 4, 3, 5, 6


def f32(*dims):
    return TensorType("f32", dims)


def gated_loop(merged: bool):
    """LSTM's step with one product of the state per gate: h·U_i, h·U_f, h·U_c, h·U_o (x·W given per step); the
    loss Σ h_T·r and its gradients with respect to every input."""
    b = Builder()
    xs = b.var(f32(STEPS, BATCH, 4 * UNITS), "xs")
    h0, c0 = b.var(f32(BATCH, UNITS), "h0"), b.var(f32(BATCH, UNITS), "c0")
    weights = [b.var(f32(UNITS, UNITS), f"u{k}") for k in range(4)]
    r = b.var(f32(BATCH, UNITS), "r")
    cell = Builder()
    h, c, x = cell.var(h0.type, "h"), cell.var(c0.type, "c"), cell.var(f32(BATCH, 4 * UNITS), "x")
    us = [cell.var(w.type, "u") for w in weights]
    pieces = cell.split(x, sizes=(UNITS,) * 4, axis=1)
    i, f, g, o = (cell.add(p, cell.matmul(h, u)) for p, u in zip(pieces, us))
    c_new = cell.add(cell.mul(cell.sigmoid(f), c), cell.mul(cell.sigmoid(i), cell.tanh(g)))
    h_new = cell.mul(cell.sigmoid(o), cell.tanh(c_new))
    body = cell.program([h, c, x, *us], [h_new, c_new, h_new])
    last, _, _ = b.scan(h0, c0, xs, *weights, body=body, num_carry=2, num_xs=1, reverse=False)
    program = b.program([xs, h0, c0, *weights, r], [])
    if merged:
        b.eqns = merge_products(program).eqns
    loss = b.reduce_sum(b.mul(last, r), axes=(0, 1))
    wrt = program.inputs[:-1]
    grads = backprop(b, list(b.eqns), {id(loss): b.const(1.0)}, wrt)
    program.outputs, program.eqns = [loss, *grads], b.eqns
    return program


def test_merged_products_give_the_same_values_and_gradients():
    plain = gated_loop(merged=False)
    arrays = [np.random.default_rng(k).standard_normal(v.shape) for k, v in enumerate(plain.inputs)]
    for got, want in zip(run_program(gated_loop(merged=True), arrays), run_program(plain, arrays), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_the_loop_multiplies_the_state_once_by_the_weights_joined():
    program = gated_loop(merged=True)
    scan = next(e for e in program.eqns if isinstance(e.op, Scan))
    products = [e for e in scan.attrs["body"].eqns if isinstance(e.op, MatMul)]
    assert len(products) == 1 and products[0].inputs[1].shape == (UNITS, 4 * UNITS)
