"""Writing one CUDA kernel's text: its array parameters, the grid-stride loop over its elements, its body.

`KernelWriter` is what `kdsl.backends.cuda.ops` writes other ops' kernels with; `fused_loop`
writes a fused elementwise chain, one thread per element.
"""

from __future__ import annotations

from collections.abc import Sequence

from kdsl.backends.loop_indexing import broadcast_index, piece_index
from kdsl.backends.source import SourceWriter
from kdsl.ir.program import Var
from kdsl.ir.types import Dim
from kdsl.passes.fuse import Kernel, Plan


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
        sizes = [f"n{axis}" for axis in range(len(self.space))]
        head = [
            "@cuda.jit(cache=True)",
            f"def {self.name}({', '.join([*sizes, *(self.params[id(v)] for v in self.arrays)])}):",
        ]
        return "\n".join([*head, *self.grid_stride(sizes)])

    def grid_stride(self, sizes: list[str]) -> list[str]:
        """The body's lines in a loop giving each thread its elements of the space `sizes`, with their indices `i0`,
        `i1`, ...

        The loop counts in unsigned integers: Numba's range over signed ones, and its floor division and modulo
        with Python's signs, compiled to about four times the instructions, with a 64-bit division routine called
        for each index, where an unsigned division of values under 2**32 takes the GPU's short path.
        """
        indent = "    " * (self._depth - 1)
        count = " * ".join(sizes) or "1"
        head = [f"{indent}flat = np.uint64(cuda.grid(1))", f"{indent}while flat < np.uint64({count}):"]
        if sizes:
            head.append(f"{indent}    rest = flat")
        for axis in reversed(range(len(sizes))):
            if axis:
                size = f"np.uint64({sizes[axis]})"
                head += [f"{indent}    i{axis} = np.int64(rest % {size})", f"{indent}    rest = rest // {size}"]
            else:
                head.append(f"{indent}    i0 = np.int64(rest)")
        return [*head, *self.lines, f"{indent}    flat += np.uint64(cuda.gridsize(1))"]


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
        return place(var, broadcast_index(var, kernel.shape, idx))

    def place(var: Var, own: list[str]) -> str:
        return w.at(*piece_index(fused, var, own))

    for eqn in kernel.eqns:
        register = w.fresh("r")
        w.line(f"{register} = {eqn.op.scalar(eqn.attrs, *(load(x) for x in eqn.inputs))}")
        registers[id(eqn.out)] = register
        if id(eqn.out) not in fused.registers:
            w.line(f"{place(eqn.out, idx)} = {register}")
        for whole, offset in fused.copies.get(id(eqn.out), ()):
            w.line(f"{place(whole, [*idx[:-1], f'{offset} + {idx[-1]}'])} = {register}")
