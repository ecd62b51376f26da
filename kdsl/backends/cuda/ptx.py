"""The CUDA target's kernels compiled to PTX for a chosen GPU, with no GPU present.

Numba's simulator runs the kernels as Python, so it accepts code that a GPU's compiler
rejects (a builtin CUDA Numba does not lower, a type that does not unify). Compiling each
kernel with the argument types the runner will launch it with, through NVIDIA's NVVM, is
the check that needs no device: `kdsl compile --target cuda --emit ptx` prints the result,
and the test suite runs it on models with every kind of kernel. It needs `numba-cuda` and
NVVM (the `cuda` extra brings both) and the simulator switched off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType, SimpleNamespace

import numpy as np
from numba import cuda, typeof, types
from numba.cuda import dispatcher

from kdsl.backends.cuda import gemm, optimizer, runner
from kdsl.backends.cuda.codegen import Launch, Schedule
from kdsl.backends.cuda.persistent import Persistent
from kdsl.ir.program import Var
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
        "sum_squares": (optimizer.sum_squares, (vector, np.bool_(True), np.float32(1.0), vector, 0)),
    }
    for rule in (optimizers.SGD(), optimizers.Adam(), optimizers.RMSprop(), optimizers.Adagrad()):
        rule.iterations = 1  # Adam's bias corrections divide by zero at step 0
        slots = rule.create_slots(vector)
        arrays = [slots.get(name, vector) for name in rule.slot_names]
        scalars = (np.bool_(False), np.float32(0.0), np.float32(1.0), np.float32(1.0), *rule.scalars(np.float32(0.1)))
        examples[rule.name] = (optimizer.KERNELS[rule.name], (vector, vector, *arrays, *scalars))
    return {name: _ptx(kernel, [typeof(x) for x in example], cc) for name, (kernel, example) in examples.items()}


def _launches(schedule: Schedule) -> Iterator[Launch | Persistent]:
    for step in schedule.steps:
        if isinstance(step, Launch | Persistent):
            yield step
    for body in schedule.bodies.values():
        yield from _launches(body)


def _argument_types(launch: Launch | Persistent) -> list:
    """How Numba types the runner's arguments: counts and sizes as Python ints, then C-contiguous device arrays
    (a scalar as one element), in the order the runner passes them."""
    if isinstance(launch, Launch):
        return [types.int64] * len(launch.space) + list(map(_array_type, launch.arrays))
    eqn, nc = launch.eqn, launch.eqn.attrs["num_carry"]
    carries = [var for var in eqn.attrs["body"].outputs[:nc] for _ in (0, 1)]
    arrays = [*eqn.inputs, *carries, *eqn.outputs[nc:], *launch.locals]
    return [types.int64] * (1 + sum(map(len, launch.spaces))) + list(map(_array_type, arrays))


def _array_type(var: Var) -> types.Array:
    return types.Array(types.float32 if var.type.dtype == "f32" else types.int32, max(var.rank, 1), "C")


def _ptx(kernel, argument_types: list, cc: tuple[int, int]) -> str:
    with _device_standing_in(cc):
        ptx, _ = cuda.compile_ptx(kernel.py_func, types.void(*argument_types), cc=cc)
    return ptx


@contextmanager
def _device_standing_in(cc: tuple[int, int]) -> Iterator[None]:
    """Numba compiles a called device function, and the grid barrier of cooperative groups, for the current
    GPU, whose compute capability it asks the driver for; with no GPU, a stand-in answers `cc`."""
    if cuda.is_available():
        yield
        return
    asked = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: SimpleNamespace(compute_capability=cc)
    try:
        yield
    finally:
        dispatcher.get_current_device = asked
