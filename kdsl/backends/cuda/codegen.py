"""CUDA source for lowered programs, from the same fusion plan as the CPU target.

Each kernel of the plan (`kdsl.passes.fuse.plan`) becomes one `@cuda.jit` kernel whose
threads share its elements through a grid-stride loop: a fused elementwise loop keeps its
intermediates in registers and reads and writes pieces at offsets of the values they
belong to, exactly as on the CPU, with the same scalar templates and float32 helpers
(compiled as device functions); any other op gets the kernel `kdsl.backends.cuda.ops`
writes for it. Matrix products and time loops get no kernel of their own: the runner
calls the GEMM (`kdsl.backends.cuda.gemm`) and launches a scan's cell once per step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from kdsl.backends.cpu import scalars
from kdsl.backends.cpu.codegen import Entry, _support_source, identifier
from kdsl.backends.cuda import ops
from kdsl.backends.source import SourceWriter
from kdsl.ir.program import Eqn, Program, Var
from kdsl.ir.types import Dim
from kdsl.passes.fuse import Kernel, Plan, cse, plan

# the runner, not a generated kernel, carries these out
HOST_OPS = ("matmul", "matmul_tn", "scan")


@dataclass
class Launch:
    """A generated kernel: called with the sizes of its iteration space `space`, then its `arrays`."""

    name: str
    space: tuple[Dim, ...]
    arrays: list[Var]
    zeroed: list[Var] = field(default_factory=list)  # arrays the kernel accumulates into: cleared first


@dataclass
class Schedule:
    """One program's plan as the runner walks it: launches, and equations it runs itself (GEMMs, scans, views)."""

    program: Program
    steps: list[Launch | Eqn]
    bodies: dict[int, Schedule]  # a scan equation's id -> the schedule of its cell
    constants: dict[int, float]


class KernelWriter(SourceWriter):
    """The text of one kernel: its array parameters, the index of the element a thread is at, its body."""

    def __init__(self, name: str):
        self.name = name
        self.arrays: list[Var] = []
        self.params: dict[int, str] = {}
        self.space: tuple[Dim, ...] = ()
        self.zeroed: list[Var] = []
        self.lines: list[str] = []
        self._depth = 2
        self._count = 0

    def array(self, var: Var) -> str:
        """The parameter holding `var`'s array."""
        if id(var) not in self.params:
            self.params[id(var)] = f"a{len(self.arrays)}"
            self.arrays.append(var)
        return self.params[id(var)]

    def at(self, var: Var, idx: Sequence[str]) -> str:
        """Element `idx` of `var` (a scalar is the one element of a 1-element array)."""
        return f"{self.array(var)}[{', '.join(idx) if var.rank else '0'}]"

    def size(self, var: Var, axis: int) -> str:
        return f"{self.array(var)}.shape[{axis}]"

    def over(self, dims: tuple[Dim, ...]) -> list[str]:
        """One thread per element of `dims` (sizes passed at launch); returns the index variables."""
        self.space = tuple(dims)
        return [f"i{axis}" for axis in range(len(dims))]

    def source(self) -> str:
        rank = len(self.space)
        sizes = [f"n{axis}" for axis in range(rank)]
        head = [
            "@cuda.jit(cache=True)",
            f"def {self.name}({', '.join([*sizes, *(self.params[id(v)] for v in self.arrays)])}):",
            f"    for flat in range(cuda.grid(1), {' * '.join(sizes) or '1'}, cuda.gridsize(1)):",
        ]
        if rank:
            head.append("        rest = flat")
        for axis in reversed(range(rank)):
            if axis:
                head.append(f"        i{axis} = rest % n{axis}")
                head.append(f"        rest = rest // n{axis}")
            else:
                head.append("        i0 = rest")
        return "\n".join([*head, *self.lines])


class ModuleWriter:
    """Kernels for every plan of a module's entries, scan cells included, and the schedules that call them."""

    def __init__(self) -> None:
        self.kernels: list[str] = []

    def schedule(self, program: Program) -> Schedule:
        fused = plan(program)
        constants = [e for e in program.eqns if e.op.name == "const"]
        literals = {id(e.out): e.op.scalar(e.attrs) for e in constants}
        result = Schedule(program, [], {}, {id(e.out): e.attrs["value"] for e in constants})
        for kernel in fused.kernels:
            eqn = kernel.eqns[0]
            if kernel.kind == "view" or (kernel.kind == "op" and eqn.op.name in HOST_OPS):
                result.steps.append(eqn)
                if eqn.op.name == "scan":
                    result.bodies[id(eqn)] = self.schedule(eqn.attrs["body"])
                continue
            writer = KernelWriter(f"k{len(self.kernels)}_{identifier(kernel.origin or eqn.op.name)}")
            if kernel.kind == "loop":
                fused_loop(writer, kernel, fused, literals)
            else:
                ops.write(writer, eqn)
            self.kernels.append(writer.source())
            result.steps.append(Launch(writer.name, writer.space, writer.arrays, writer.zeroed))
        return result


def fused_loop(w: KernelWriter, kernel: Kernel, fused: Plan, literals: dict[int, str]) -> None:
    """One thread per element of the loop's shape computes every op of the chain for that element.

    `literals` holds the constants, written inline as the CPU target does.
    """
    idx = w.over(kernel.shape)
    registers: dict[int, str] = {}

    def load(var: Var) -> str:
        if id(var) in registers:
            return registers[id(var)]
        if id(var) in literals:
            return literals[id(var)]
        lead = len(kernel.shape) - var.rank  # NumPy broadcasting: size-1 axes read element 0
        own = ["0" if d == 1 and kernel.shape[lead + a] != 1 else idx[lead + a] for a, d in enumerate(var.shape)]
        return place(var, own)

    def place(var: Var, own: list[str]) -> str:
        if id(var) in fused.pieces:
            whole, offset = fused.pieces[id(var)]
            return place(whole, [*own[:-1], f"{offset} + {own[-1]}"])
        return w.at(var, own)

    for eqn in kernel.eqns:
        register = w.fresh("r")
        w.line(f"{register} = {eqn.op.scalar(eqn.attrs, *(load(x) for x in eqn.inputs))}")
        registers[id(eqn.out)] = register
        if id(eqn.out) not in fused.registers:
            w.line(f"{place(eqn.out, idx)} = {register}")
        for whole, offset in fused.copies.get(id(eqn.out), ()):
            w.line(f"{place(whole, [*idx[:-1], f'{offset} + {idx[-1]}'])} = {register}")


def device_scalars() -> str:
    """The CPU target's float32 scalar helpers, compiled as inlined CUDA device functions."""
    source, count = re.subn(r"^@numba\.njit\(.*\)$", "@cuda.jit(device=True, inline=True)",
                            _support_source(scalars), flags=re.M)  # fmt: skip
    assert count, "the scalar helpers are no longer decorated with @numba.njit"
    return source


def prepare(program: Program) -> Program:
    """A program as this generator takes it: repeated work merged; embeddings stay unfolded
    (the CPU target's `gather_matmul`, which picks its order of work when it runs, has no CUDA kernel yet)."""
    return cse(program)


def generate_module(title: str, entries: list[Entry]) -> tuple[str, dict[str, Schedule]]:
    """The text of a module of CUDA kernels for `entries`, and each entry's schedule over those kernels."""
    writer = ModuleWriter()
    schedules = {entry.name: writer.schedule(entry.program) for entry in entries}
    parts = [
        f'"""{title}\n\nGenerated by kdsl: CUDA kernels for Numba; kdsl\'s CUDA runner launches them."""',
        "import math\n\nimport numpy as np\nfrom numba import cuda",
        device_scalars(),
        *writer.kernels,
    ]
    return "\n\n\n".join(parts) + "\n", schedules
