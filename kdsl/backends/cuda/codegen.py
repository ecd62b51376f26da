"""CUDA source for lowered programs, from the same fusion plan as the CPU target.

Each kernel of the plan (`kdsl.passes.fuse.plan`) becomes one `@cuda.jit` kernel whose
threads share its elements through a grid-stride loop: a fused elementwise loop keeps its
intermediates in registers and reads and writes pieces at offsets of the values they
belong to, exactly as on the CPU, with the same scalar templates and float32 helpers
(compiled as device functions); any other op gets the kernel `kdsl.backends.cuda.ops`
writes for it. A time loop becomes one persistent kernel (`kdsl.backends.cuda.persistent`)
where its cell allows, else the runner launches the cell's kernels once per step; the runner
calls the GEMM (`kdsl.backends.cuda.gemm`) for matrix products outside time loops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdsl.backends.cpu.codegen import identifier
from kdsl.backends.cpu.support import scalars
from kdsl.backends.cuda import cell_products, ops
from kdsl.backends.cuda.persistent import Persistent, persistent_scan
from kdsl.backends.cuda.writer import KernelWriter, fused_loop
from kdsl.backends.modules import source_digest
from kdsl.ir.ops.scan import Scan
from kdsl.ir.program import Entry, Eqn, Program, Var
from kdsl.ir.types import Dim
from kdsl.passes.fuse import Plan


@dataclass
class Launch:
    """A generated kernel: called with the sizes of its iteration space `space`, then its `arrays`."""

    name: str
    space: tuple[Dim, ...]
    arrays: list[Var]
    zeroed: list[Var] = field(default_factory=list)  # arrays the kernel accumulates into: cleared first
    once: bool = False  # its output depends on the sizes alone: computed at the first call with them


@dataclass
class Schedule:
    """One program's plan as the runner walks it: launches, and equations it runs itself (GEMMs, scans, views)."""

    program: Program
    steps: list[Launch | Persistent | Eqn]
    bodies: dict[int, Schedule]  # a scan equation's id -> the schedule of its cell
    constants: dict[int, float]


class ModuleWriter:
    """Kernels for every plan of a module's entries, scan cells included, and the schedules that call them."""

    def __init__(self, persistent: bool = True) -> None:
        self.kernels: list[str] = []
        self.allow_persistent = persistent
        self.persistent = False  # whether a time loop became one kernel: the module then needs cell products

    def schedule(self, program: Program, fused: Plan) -> Schedule:
        literals = {key: e.op.scalar(e.attrs) for key, e in fused.constants.items()}
        result = Schedule(program, [], {}, {key: e.attrs["value"] for key, e in fused.constants.items()})
        for kernel in fused.kernels:
            eqn = kernel.eqns[0]
            if isinstance(eqn.op, Scan):
                result.steps.append(self.scan(eqn, fused.body(eqn), result, kernel.origin))
                continue
            if kernel.kind == "view" and id(eqn) in fused.free:
                continue  # no code: loops address its pieces
            if kernel.kind == "view" or eqn.op.product:
                result.steps.append(eqn)  # the runner reshapes, or calls the GEMM
                continue
            writer = KernelWriter(f"k{len(self.kernels)}_{identifier(kernel.origin or eqn.op.name)}")
            if kernel.kind == "loop":
                fused_loop(writer, kernel, fused, literals)
            else:
                ops.write(writer, eqn)
            self.kernels.append(writer.source())
            once = kernel.kind == "op" and eqn.op.sizes_only
            result.steps.append(Launch(writer.name, writer.space, writer.arrays, writer.zeroed, once))
        return result

    def scan(self, eqn: Eqn, cell: Plan, schedule: Schedule, origin: str | None) -> Persistent | Eqn:
        """A persistent kernel for the time loop where its cell allows, else the host loop over the cell's kernels."""
        name = f"s{len(self.kernels)}_{identifier(origin or 'scan')}"
        found = self.allow_persistent and persistent_scan(name, eqn, cell)
        if found:
            self.kernels.append(found[0])
            self.persistent = True
            return found[1]
        schedule.bodies[id(eqn)] = self.schedule(eqn.attrs["body"], cell)
        return eqn


def support_imports(persistent: bool) -> str:
    """The lines that bring a generated module the float32 scalar helpers, compiled as inlined device functions,
    and, for persistent time loops, the cell products; with the digest of both."""
    lines = [f"from {scalars.__name__} import compiled_helpers"]
    if persistent:
        lines.append(f"from {cell_products.__name__} import {', '.join(cell_products.__all__)}")
    return "\n".join([
        *lines,
        "",
        f'SUPPORT = "{source_digest(scalars, cell_products)}"  # the support code this module was written against',
        "globals().update(compiled_helpers(cuda.jit(device=True, inline=True)))  # the scalar helpers its loops call",
    ])  # fmt: skip


def generate_module(
    title: str, entries: list[Entry], plans: dict[str, Plan], persistent: bool = True
) -> tuple[str, dict[str, Schedule]]:
    """The text of a module of CUDA kernels for `entries` (each with its plan), and each entry's schedule over
    those kernels; `persistent=False` keeps every time loop on the host."""
    writer = ModuleWriter(persistent)
    schedules = {entry.name: writer.schedule(entry.program, plans[entry.name]) for entry in entries}
    parts = [
        f'"""{title}\n\nGenerated by kdsl: CUDA kernels for Numba; kdsl\'s CUDA runner launches them."""',
        "import math\n\nimport numpy as np\nfrom numba import cuda\n\n" + support_imports(writer.persistent),
        *writer.kernels,
    ]
    return "\n\n\n".join(parts) + "\n", schedules
