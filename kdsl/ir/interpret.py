"""The IR's interpreter: lowered programs run op by op through each op's NumPy reference.

It is slow and obviously correct, and it is the oracle every other backend is tested against.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kdsl.ir.program import Program, Var


def run_program(
    program: Program, inputs: Sequence[np.ndarray], sizes: dict[str, int] | None = None
) -> list[np.ndarray]:
    """Outputs of `program`; `sizes` binds symbolic dims (found from the inputs' shapes when not given)."""
    env = {id(var): value for var, value in zip(program.inputs, inputs, strict=True)}
    sizes = sizes if sizes is not None else bind_sizes(program.inputs, inputs)
    for eqn in program.eqns:
        arrays = [env[id(x)] for x in eqn.inputs]
        results = eqn.op.reference({**eqn.attrs, "symbols": sizes}, *arrays)
        for var, value in zip(eqn.outputs, results, strict=True):
            env[id(var)] = value
    return [env[id(var)] for var in program.outputs]


def bind_sizes(variables: Sequence[Var], arrays: Sequence[np.ndarray]) -> dict[str, int]:
    """Each symbolic dim's size, read from the arrays given for variables of that type."""
    sizes: dict[str, int] = {}
    for var, array in zip(variables, arrays):
        for dim, size in zip(var.shape, np.shape(array)):
            if isinstance(dim, str) and "*" not in dim and sizes.setdefault(dim, size) != size:
                raise ValueError(f"dimension `{dim}` is {sizes[dim]} for one input and {size} for `{var.name}`")
    return sizes
