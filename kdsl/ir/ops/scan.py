"""`scan`: a recurrent cell applied along the leading (time) axis of its sequence inputs.

Inputs are `carries` (the state, e.g. h and c), `xs` (time-major sequences read one step at
a time) and `consts` (weights). The body maps (carries, x_t, consts) to (new carries, y_t);
the scan returns the final carries and each y stacked over time. With `reverse`, steps run
from last to first; y_t is still stored at position t. Its gradient, backpropagation through
time, is autodiff's (`kdsl.passes.bptt`).
"""

from __future__ import annotations

import numpy as np

from kdsl.ir.interpret import run_program
from kdsl.ir.ops.base import Op
from kdsl.ir.program import Var
from kdsl.ir.types import Dim, TensorType


def stacked_type(var: Var, steps: Dim) -> TensorType:
    """The type of `var`'s values at every step, stacked on a leading time axis."""
    return TensorType(var.type.dtype, (steps, *var.shape))


def step_order(steps: int, reverse: bool) -> range:
    """The steps in the order a scan runs them."""
    return range(steps - 1, -1, -1) if reverse else range(steps)


class Scan(Op):
    name = "scan"
    single_output = False

    def infer(self, attrs, *types):
        body, nc, nx = attrs["body"], attrs["num_carry"], attrs["num_xs"]
        steps = types[nc].dims[0]
        expected = [v.type for v in body.inputs[:nc]] + [stacked_type(v, steps) for v in body.inputs[nc : nc + nx]]
        expected += [v.type for v in body.inputs[nc + nx :]]
        if list(types) != expected:
            raise ValueError(f"scan: inputs {[str(t) for t in types]} do not fit its body {[str(t) for t in expected]}")
        return [v.type for v in body.outputs[:nc]] + [stacked_type(v, steps) for v in body.outputs[nc:]]

    def reference(self, attrs, *arrays):
        body, nc, nx = attrs["body"], attrs["num_carry"], attrs["num_xs"]
        carries, xs, consts = list(arrays[:nc]), arrays[nc : nc + nx], arrays[nc + nx :]
        steps = xs[0].shape[0]
        ys: list[list[np.ndarray]] = [[] for _ in body.outputs[nc:]]
        for t in step_order(steps, attrs["reverse"]):
            outs = run_program(body, [*carries, *(x[t] for x in xs), *consts], attrs["symbols"])
            carries = outs[:nc]
            for stack, y in zip(ys, outs[nc:]):
                stack.append(y)
        if attrs["reverse"]:
            ys = [stack[::-1] for stack in ys]
        stacked = [np.stack(stack) for stack in ys]
        return [*carries, *stacked]


OPS = [Scan()]
