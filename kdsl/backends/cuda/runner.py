"""The host side of the CUDA target: walks a program's schedule, launching kernels on device arrays.

Every value the plan materializes gets a device buffer, allocated the first time a set of
symbolic sizes (the batch size, usually) is seen and reused by every later call, so a step
allocates nothing. A scan is one launch of its persistent kernel (`kdsl.backends.cuda.persistent`)
on a cooperative grid; a cell that kernel cannot hold is a host loop launching the cell's
kernels once per step, each step's outputs computed straight into their slot of the stacked
result and new carries alternating between two buffers, as the persistent kernel does. Kernels
run in order on the default stream; nothing here waits for the device. Since a call's arrays
are the same from call to call, walking the schedule once is enough: later calls replay the
launches it recorded.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import ModuleType

import numpy as np
from numba import cuda, typeof

import kdsl
from kdsl.backends.cpu.support.cache_keys import key_by_package
from kdsl.backends.cuda.codegen import Launch, Schedule
from kdsl.backends.cuda.gemm import gemm
from kdsl.backends.cuda.launch import element_grid, persistent_grid, simulated
from kdsl.backends.cuda.persistent import Persistent
from kdsl.ir.ops.linalg import MatMul
from kdsl.ir.ops.scan import Scan, step_order
from kdsl.ir.program import Eqn, Var
from kdsl.ir.types import concrete

key_by_package(kdsl.__file__)

Sizes = dict[str, int]


@cuda.jit(cache=True)
def zero(flat):
    """Clear an array before a kernel adds into it atomically."""
    for i in range(cuda.grid(1), flat.size, cuda.gridsize(1)):
        flat[i] = 0


class DeviceProgram:
    """One entry of a generated module (`forward`, `train_step`): device arrays in, device arrays out."""

    def __init__(self, module: ModuleType, schedule: Schedule):
        self.module, self.schedule = module, schedule
        self.buffers: dict[tuple, dict[tuple, object]] = {}  # sizes -> (value id, which) -> array
        self.replays: dict[tuple, tuple[list, list]] = {}  # (sizes, input arrays) -> (calls, outputs)

    def __call__(self, arrays: Sequence, sizes: Sizes) -> list:
        """Run on `arrays`, device arrays or host arrays (copied into device buffers kept for the next call).

        The first call with these sizes and device arrays walks the schedule and records every launch
        with its arguments; later calls replay the record, which is all a call does then: every array a
        launch reads or writes is the same from call to call.
        """
        program = self.schedule.program
        key = tuple(sorted(sizes.items()))
        run = _Run(self.module, self.buffers.setdefault(key, {}), sizes)
        inputs = [run.on_device(var, array) for var, array in zip(program.inputs, arrays, strict=True)]
        replay = (key, *map(id, inputs))  # the record keeps the arrays alive: an id is not reused
        if replay in self.replays:
            calls, outputs = self.replays[replay]
            for call, arguments in calls:
                call(*arguments)
            return list(outputs)
        env = {id(var): array for var, array in zip(program.inputs, inputs)}
        run.schedule(self.schedule, env)
        outputs = [run.value(var, env, self.schedule) for var in program.outputs]
        self.replays[replay] = (run.calls, outputs)
        return list(outputs)


class _Run:
    """One call of a program: its buffers and sizes, shared by the scan cells it runs."""

    def __init__(self, module: ModuleType, buffers: dict, sizes: Sizes):
        self.module, self.buffers, self.sizes = module, buffers, sizes
        self.calls: list[tuple[Callable, tuple]] = []  # every launch and copy made, in order

    def call(self, function: Callable, *arguments) -> None:
        """Launch (or copy) now, and record it for the calls that replay this one."""
        function(*arguments)
        self.calls.append((function, arguments))

    def buffer(self, var: Var, copy: int = 0):
        """The device buffer of `var` (scalars as one element); `copy` 1 is a second one, for carries."""
        key = (id(var), copy)
        if key not in self.buffers:
            dtype = np.float32 if var.type.dtype == "f32" else np.int32
            self.buffers[key] = cuda.device_array(concrete(var.shape, self.sizes) or (1,), dtype)
        return self.buffers[key]

    def on_device(self, var: Var, array):
        """An input on the device: a host array goes into the input's buffer, so a step allocates nothing."""
        if not isinstance(array, np.ndarray):
            return array
        key = (id(var), "input")
        if key not in self.buffers or self.buffers[key].shape != array.shape or self.buffers[key].dtype != array.dtype:
            self.buffers[key] = cuda.device_array(array.shape, array.dtype)
        self.buffers[key].copy_to_device(np.ascontiguousarray(array))
        return self.buffers[key]

    def value(self, var: Var, env: dict, schedule: Schedule):
        if id(var) not in env:
            env[id(var)] = self.stored(var, schedule.constants)
        return env[id(var)]

    def stored(self, var: Var, constants: dict[int, float]):
        """The device array of a value no input or output binds: a constant (uploaded once), else its buffer."""
        if id(var) not in constants:
            return self.buffer(var)
        key = (id(var), "constant")
        if key not in self.buffers:
            dtype = np.float32 if var.type.dtype == "f32" else np.int32
            self.buffers[key] = cuda.to_device(np.full(1, constants[id(var)], dtype))
        return self.buffers[key]

    def schedule(self, schedule: Schedule, env: dict) -> None:
        for step in schedule.steps:
            if isinstance(step, Launch):
                self.launch(step, env, schedule)
            elif isinstance(step, Persistent):
                self.persistent(step, env, schedule)
            elif isinstance(step.op, Scan):
                self.scan(step, env, schedule)
            elif step.op.product:
                self.matmul(step, env, schedule)
            else:
                self.view(step, env, schedule)

    def launch(self, step: Launch, env: dict, schedule: Schedule) -> None:
        space = concrete(step.space, self.sizes)
        arrays = [self.value(var, env, schedule) for var in step.arrays]
        for var in step.zeroed:
            array = self.value(var, env, schedule)
            self.call(zero[element_grid(array.size)], array.reshape(array.size))
        count = math.prod(space)
        if count:
            launch = getattr(self.module, step.name)[element_grid(count)]
            if step.once:  # values are never written twice: what this wrote stays for the replays
                launch(*space, *arrays)
            else:
                self.call(launch, *space, *arrays)

    def persistent(self, step: Persistent, env: dict, schedule: Schedule) -> None:
        """A whole time loop in one launch of its kernel; the final carries are left in its buffers."""
        eqn, nc = step.eqn, step.eqn.attrs["num_carry"]
        body = eqn.attrs["body"]
        outer = [self.value(v, env, schedule) for v in eqn.inputs]
        steps = outer[nc].shape[0]
        buffers = [self.buffer(var, copy) for var in body.outputs[:nc] for copy in (0, 1)]
        stacked = [self.value(v, env, schedule) for v in eqn.outputs[nc:]]
        locals_ = [self.stored(var, step.constants) for var in step.locals]
        spaces = [concrete(space, self.sizes) for space in step.spaces]
        arguments = [steps, *(n for space in spaces for n in space), *outer, *buffers, *stacked, *locals_]
        kernel = getattr(self.module, step.name)
        self.call(kernel[cooperative_grid(kernel, arguments, *step.work(self.sizes))], *arguments)
        for k, var in enumerate(eqn.outputs[:nc]):
            final = outer[k] if steps == 0 else buffers[2 * k + (steps - 1) % 2]
            if id(var) in env:  # a slot of an enclosing loop's stacked output
                self.copy(env[id(var)], final)
            else:
                env[id(var)] = final

    def matmul(self, eqn: Eqn, env: dict, schedule: Schedule) -> None:
        (a, b), y = eqn.inputs, eqn.out
        left, right, out = (self.value(v, env, schedule) for v in (a, b, y))
        rows = left.size // left.shape[left.ndim - 1]
        if isinstance(eqn.op, MatMul):
            self.call(
                gemm(matrix(left, rows), right, matrix(out, rows), transpose_b=bool(eqn.attrs.get("transpose_b")))
            )
        else:
            self.call(gemm(matrix(left, rows), matrix(right, rows), out, transpose_a=True))

    def view(self, eqn: Eqn, env: dict, schedule: Schedule) -> None:
        """A reshape: a view of its input's device array."""
        source = self.value(eqn.inputs[0], env, schedule)
        shaped = source.reshape(*var_shape(eqn.out, self.sizes))
        if id(eqn.out) in env:  # a cell output already placed in its stacked slot
            self.copy(env[id(eqn.out)], shaped)
        else:
            env[id(eqn.out)] = shaped

    def scan(self, eqn: Eqn, env: dict, schedule: Schedule) -> None:
        body, nc, nx = eqn.attrs["body"], eqn.attrs["num_carry"], eqn.attrs["num_xs"]
        cell = schedule.bodies[id(eqn)]
        outer = [self.value(v, env, schedule) for v in eqn.inputs]
        carries, xs, consts = outer[:nc], outer[nc : nc + nx], outer[nc + nx :]
        stacked = [self.value(v, env, schedule) for v in eqn.outputs[nc:]]
        for step, t in enumerate(step_order(xs[0].shape[0], eqn.attrs["reverse"])):
            inner = {id(v): a for v, a in zip(body.inputs, [*carries, *(x[t] for x in xs), *consts])}
            copies = []
            for var, stack in zip(body.outputs[nc:], stacked):
                if id(var) in inner:
                    copies.append((stack[t], var))
                else:
                    inner[id(var)] = stack[t]
            for var in body.outputs[:nc]:
                if id(var) not in inner:
                    inner[id(var)] = self.buffer(var, copy=step % 2)
            self.schedule(cell, inner)
            for destination, var in copies:
                self.copy(destination, self.value(var, inner, cell))
            carries = [self.value(v, inner, cell) for v in body.outputs[:nc]]
        for var, carry in zip(eqn.outputs[:nc], carries):
            self.copy(self.value(var, env, schedule), carry)

    def copy(self, destination, source) -> None:
        self.call(copy, destination, source)


def cooperative_grid(kernel, arguments: list, count: int, tiles: int) -> tuple[int, int]:
    """(blocks, threads) for a kernel with grid-wide barriers: every block must be resident on the GPU at once,
    so the grid is capped at what the GPU holds of this kernel (the simulator runs one block)."""
    if simulated():
        return persistent_grid(count, tiles)
    blocks, threads = persistent_grid(count, tiles, cuda.get_current_device().MULTIPROCESSOR_COUNT)
    compiled = kernel.compile(tuple(typeof(a) for a in arguments))
    return min(blocks, compiled.max_cooperative_grid_blocks(threads)), threads


def var_shape(var: Var, sizes: Sizes) -> tuple[int, ...]:
    return concrete(var.shape, sizes) or (1,)


def matrix(array, rows: int):
    """A contiguous device array as a matrix of its last axis (the simulator's shapes take no negative index)."""
    return array.reshape(rows, array.size // rows)


def copy(destination, source) -> None:
    destination.copy_to_device(source.reshape(*destination.shape))
