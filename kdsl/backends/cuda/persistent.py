"""A time loop as one CUDA kernel that runs every step: the cell's kernels become phases of it.

Launched step by step, a cell costs a launch from Python per kernel and step (tens of µs each
through Numba's dispatcher and CuPy), which for a recurrent cell's small kernels is most of the
step. Here the threads of one cooperative grid loop over the steps together. Each phase, a
fused elementwise loop or another op's kernel body, is a grid-stride loop; a product with the
recurrent weight is shared out over the blocks a tile each (`kdsl.backends.cuda.cell_products`).
A grid-wide barrier follows a phase where a kernel boundary was. Carries alternate between two
buffers, so a step never overwrites the state it reads; each step writes its outputs into their
slot of the stacked results. A cell holding what a phase cannot do (a reshape that is not free,
a nested loop, an atomic sum, a product by the transpose of a value it computes) keeps the
runner's host loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdsl.backends.cuda import ops
from kdsl.backends.cuda.launch import product_tiles
from kdsl.backends.cuda.writer import KernelWriter, fused_loop
from kdsl.ir.ops.linalg import MatMul
from kdsl.ir.ops.scan import Scan
from kdsl.ir.program import Eqn, Var
from kdsl.ir.types import Dim, TensorType, numel
from kdsl.passes.fuse import Plan


@dataclass
class Persistent:
    """A scan run by the cooperative kernel `name`, called with the step count, the sizes of `spaces`, the scan's
    inputs, two buffers per carry, the stacked outputs, and the cell values it keeps in buffers (`locals`)."""

    name: str
    eqn: Eqn
    spaces: list[tuple[Dim, ...]] = field(default_factory=list)
    products: list[Var] = field(default_factory=list)  # outputs of products by a matrix, cut into tiles
    tn_products: list[Var] = field(default_factory=list)  # outputs of aᵀ·b products, a thread per element
    locals: list[Var] = field(default_factory=list)
    constants: dict[int, float] = field(default_factory=dict)  # the cell's constants among the locals, by id

    def work(self, sizes: dict[str, int]) -> tuple[int, int]:
        """(threads, tiles): threads enough for the widest loop, and the most tiles of a product (more of either
        would only wait at the barriers)."""
        loops = [numel(space, sizes) for space in [*self.spaces, *(y.shape for y in self.tn_products)]]
        tiles = [product_tiles(numel(y.shape[:1], sizes), numel(y.shape[1:], sizes)) for y in self.products]
        return max([1, *loops]), max([0, *tiles])


class Unsupported(Exception):
    """The cell holds something a phase cannot do."""


class PhaseWriter(KernelWriter):
    """One phase's loop: arrays are named by the scan's kernel, inside its loop over the steps."""

    def __init__(self, scan: ScanWriter):
        super().__init__(scan.step.name)
        self.scan = scan
        self._depth = 3
        self._count = scan.count
        self.product = False  # a product's call, not a loop

    def array(self, var: Var) -> str:
        return self.scan.array(var)


class ScanWriter:
    """The text of one scan's persistent kernel."""

    def __init__(self, name: str, eqn: Eqn, cell: Plan):
        self.step = Persistent(name, eqn)
        self.cell = cell
        self.names: dict[int, str] = {}
        self.bindings: list[str] = []  # per step: the carries, and this step's slices of inputs and outputs
        self.copies: list[tuple[str, Var]] = []  # (array, cell value) where one value has two homes
        self.phases: list[PhaseWriter] = []
        self.syncs: list[bool] = []  # whether a grid-wide barrier follows each phase
        self.count = 0
        body, nc, nx = eqn.attrs["body"], eqn.attrs["num_carry"], eqn.attrs["num_xs"]
        self.outer = [f"a{i}" for i in range(len(eqn.inputs))]
        self.buffers = [f"b{k}_{copy}" for k in range(nc) for copy in (0, 1)]
        self.stacked = [f"s{j}" for j in range(len(eqn.outputs) - nc)]
        for k, var in enumerate(body.inputs[:nc]):
            self._bind(var, f"c{k}", f"a{k} if step == 0 else (b{k}_1 if step % 2 == 0 else b{k}_0)")
        for j, var in enumerate(body.inputs[nc : nc + nx]):
            self._bind(var, f"x{j}", _slice(f"a{nc + j}", var))
        for j, var in enumerate(body.inputs[nc + nx :]):
            self.names[id(var)] = f"a{nc + nx + j}"
        self.constants = {id(var) for var in body.inputs[nc + nx :]}  # the same at every step
        self.transposes: dict[int, str] = {}
        self.prologue: list[str] = []  # before the first step
        for k, var in enumerate(body.outputs[:nc]):
            self._bind(var, f"o{k}", f"b{k}_0 if step % 2 == 0 else b{k}_1")
        for j, var in enumerate(body.outputs[nc:]):
            self._bind(var, f"y{j}", _slice(f"s{j}", var))

    def _bind(self, var: Var, name: str, value: str) -> None:
        self.bindings.append(f"{name} = {value}")
        if id(var) in self.names:  # also the value of another input or output: copied at the end of the step
            self.copies.append((name, var))
        else:
            self.names[id(var)] = name

    def array(self, var: Var) -> str:
        """The array holding `var`: bound above, or a cell value in a buffer of its own."""
        if id(var) not in self.names:
            self.names[id(var)] = f"l{len(self.step.locals)}"
            self.step.locals.append(var)
        return self.names[id(var)]

    def write(self) -> None:
        body, fused = self.step.eqn.attrs["body"], self.cell
        literals = {key: e.op.scalar(e.attrs) for key, e in fused.constants.items()}
        self.step.constants = {key: e.attrs["value"] for key, e in fused.constants.items()}
        for kernel in fused.kernels:
            eqn = kernel.eqns[0]
            if kernel.kind == "view":
                if id(eqn) not in fused.free:
                    raise Unsupported(eqn.op.name)
            elif kernel.kind == "op" and eqn.op.product:
                self._product(eqn)
            elif kernel.kind == "op" and isinstance(eqn.op, Scan):
                raise Unsupported("scan")
            else:
                writer = PhaseWriter(self)
                if kernel.kind == "loop":
                    fused_loop(writer, kernel, fused, literals)
                else:
                    ops.write(writer, eqn)
                if writer.zeroed:
                    raise Unsupported(eqn.op.name)
                self._phase(writer)
        inputs = {id(var) for var in body.inputs}
        late = []
        for name, var in self.copies:
            writer = PhaseWriter(self)
            idx = writer.over(var.shape)
            writer.line(f"{name}[{', '.join(idx) if var.rank else '0'}] = {writer.at(var, idx)}")
            same = [phase for phase in self.phases if phase.space == writer.space and not phase.product]
            if id(var) in inputs and same:  # an input is there from the step's start: copied in a loop over its shape
                same[-1].lines += writer.lines
            else:
                late.append(writer)
        for writer in late:
            self._phase(writer, sync=writer is late[-1])  # the next step writes the buffers these read

    def _phase(self, writer: PhaseWriter, sync: bool = True) -> None:
        self.step.spaces.append(writer.space)
        self.phases.append(writer)
        self.count = writer._count
        self.syncs.append(sync)

    def _product(self, eqn: Eqn) -> None:
        (a, b), y = eqn.inputs, eqn.out
        if not a.rank == b.rank == y.rank == 2:
            raise Unsupported(f"{eqn.op.name} of rank {a.rank}")
        writer = PhaseWriter(self)
        left, right, out = (writer.array(v) for v in (a, b, y))
        if isinstance(eqn.op, MatMul):
            if eqn.attrs.get("transpose_b"):
                if id(b) not in self.constants:  # a transpose made every step would cost a phase of its own
                    raise Unsupported("a product by the transpose of a value the cell computes")
                right = self._transposed(b)
            writer.line(f"rows_by_matrix({left}, {right}, {out})")
        else:
            writer.line(f"matrix_tn({left}, {right}, {out})")
        writer.product = True
        (self.step.products if isinstance(eqn.op, MatMul) else self.step.tn_products).append(y)
        self.phases.append(writer)
        self.syncs.append(True)

    def _transposed(self, weight: Var) -> str:
        """A loop constant's transpose, made once before the first step: a product by wᵀ reading w itself would
        have adjacent threads read elements a row apart, where w's transpose gives them adjacent elements."""
        if id(weight) not in self.transposes:
            transposed = Var(TensorType(weight.type.dtype, weight.shape[::-1]), f"{weight.name}_t")
            self.transposes[id(weight)] = self.array(transposed)
            self.prologue.append(f"    transpose_into({self.array(weight)}, {self.transposes[id(weight)]})")
        return self.transposes[id(weight)]

    def source(self) -> str:
        body, number = [], 0
        for writer, sync in zip(self.phases, self.syncs):
            if writer.product:  # a call: the device function loops over the outputs itself
                body += [line[4:] for line in writer.lines]
            else:
                sizes = [f"p{number}_{axis}" for axis in range(len(writer.space))]
                body += writer.grid_stride(sizes)
                number += 1
            body += ["        grid.sync()"] * sync
        sizes = [f"p{n}_{axis}" for n, space in enumerate(self.step.spaces) for axis in range(len(space))]
        locals_ = [f"l{i}" for i in range(len(self.step.locals))]
        params = ", ".join(["steps", *sizes, *self.outer, *self.buffers, *self.stacked, *locals_])
        time = "steps - 1 - step" if self.step.eqn.attrs["reverse"] else "step"
        head = [
            "@cuda.jit(cache=True)",
            f"def {self.step.name}({params}):",
            "    grid = cuda.cg.this_grid()",
            *self.prologue,
            *(["    grid.sync()"] if self.prologue else []),
            "    for step in range(steps):",
            f"        t = {time}",
        ]
        return "\n".join([*head, *(f"        {line}" for line in self.bindings), *body])


def _slice(stacked: str, var: Var) -> str:
    """Step t's slice of a stacked array (a scalar per step as a 1-element slice)."""
    return f"{stacked}[t]" if var.rank else f"{stacked}[t:t + 1]"


def persistent_scan(name: str, eqn: Eqn, cell: Plan) -> tuple[str, Persistent] | None:
    """The persistent kernel's text for a scan (`cell` is its body's plan), or None where its cell needs the host
    loop."""
    writer = ScanWriter(name, eqn, cell)
    try:
        writer.write()
    except Unsupported:
        return None
    return writer.source(), writer.step
