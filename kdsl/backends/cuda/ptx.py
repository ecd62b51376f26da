"""The CUDA target's kernels compiled to PTX for a chosen GPU, with no GPU present.

Numba's simulator runs the kernels as Python, so it accepts code that a GPU's compiler
rejects (a builtin CUDA Numba does not lower, a type that does not unify). Compiling each
kernel with the argument types the runner will launch it with, through NVIDIA's NVVM, is
the check that needs no device: `kdsl compile --target cuda --emit ptx` prints the result,
and the test suite runs it on every example. It needs `numba-cuda` and NVVM (the `cuda`
extra brings both) and the simulator switched off.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import numpy as np
from numba import cuda, typeof, types

from kdsl.backends.cuda import gemm, optimizer, runner
from kdsl.backends.cuda.codegen import Launch, Schedule
from kdsl.runtime import optimizers

DEFAULT_CC = (9, 0)  # Hopper: H100 and H200


def model_ptx(module: ModuleType, schedules: dict[str, Schedule], cc: tuple[int, int] = DEFAULT_CC) -> dict[str, str]:
    """The PTX of every kernel a generated module's schedules launch, by kernel name."""
    launches = {launch.name: launch for schedule in schedules.values() for launch in _launches(schedule)}
    return {name: _ptx(getattr(module, name), _argument_types(launch), cc) for name, launch in launches.items()}


def runtime_ptx(cc: tuple[int, int] = DEFAULT_CC) -> dict[str, str]:
    """The PTX of the runner's own kernels: clearing, the tiled GEMM, and each optimizer's update."""
    vector, matrix = np.zeros(4, np.float32), np.zeros((4, 4), np.float32)
    examples = {
        "zero": (runner.zero, (vector,)),
        "gemm_tiled": (gemm.gemm_tiled, (matrix, matrix, matrix, np.bool_(False), np.bool_(True))),
        "sum_squares": (optimizer.sum_squares, (vector, np.bool_(True), np.float32(1.0), vector)),
    }
    for rule in (optimizers.SGD(), optimizers.Adam(), optimizers.RMSprop(), optimizers.Adagrad()):
        rule.iterations = 1  # Adam's bias corrections divide by zero at step 0
        slots = rule.create_slots(vector)
        arrays = [slots.get(name, vector) for name in rule.slot_names]
        scalars = (np.bool_(False), np.float32(0.0), np.float32(1.0), np.float32(1.0), *rule.scalars(np.float32(0.1)))
        examples[rule.name] = (optimizer.KERNELS[rule.name], (vector, vector, *arrays, *scalars))
    return {name: _ptx(kernel, [typeof(x) for x in example], cc) for name, (kernel, example) in examples.items()}


def _launches(schedule: Schedule) -> Iterator[Launch]:
    for step in schedule.steps:
        if isinstance(step, Launch):
            yield step
    for body in schedule.bodies.values():
        yield from _launches(body)


def _argument_types(launch: Launch) -> list:
    """How Numba types the runner's arguments: sizes as Python ints, then C-contiguous device arrays
    (a scalar as one element)."""
    arrays = [types.Array(types.float32 if v.type.dtype == "f32" else types.int32, max(v.rank, 1), "C")
              for v in launch.arrays]  # fmt: skip
    return [types.int64] * len(launch.space) + arrays


def _ptx(kernel, argument_types: list, cc: tuple[int, int]) -> str:
    ptx, _ = cuda.compile_ptx(kernel.py_func, types.void(*argument_types), cc=cc)
    return ptx
