"""Numba source for a lowered program, following its fusion plan: buffers, fused loops, and chunks of work.

Every value the plan materializes gets a buffer carved from one preallocated float32
arena (see `kdsl.backends.cpu.support.layout`), so a step allocates nothing. Fused loops keep their
intermediate values in registers. Other ops are written by the rules the emitter is given
(`kdsl.backends.cpu.ops`); time loops by `kdsl.backends.cpu.time_loop`. The top level is cut
into functions of about CHUNK_LINES lines, and work split across threads into functions of
its own (`row_chunks`).
"""

from __future__ import annotations

import builtins
import re
import symtable
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from kdsl.backends.cpu.policy import batch_leading
from kdsl.backends.cpu.support import blas, entry, layout, loop_products, spin
from kdsl.backends.cpu.time_loop import ColumnSplit, TimeLoops
from kdsl.backends.loop_indexing import broadcast_index, piece_index
from kdsl.backends.source import SourceWriter
from kdsl.ir.ops.shape import Concat
from kdsl.ir.program import Eqn, Program, Var
from kdsl.ir.types import Dim
from kdsl.passes.fuse import Kernel, Plan

# Numba's compile time grows faster than the length of a function, and one function per kernel costs a
# fixed overhead each: top-level kernels are grouped into functions of about this many lines.
CHUNK_LINES = 400

Rule = Callable[["Emitter", Eqn], None]


@dataclass
class Buffer:
    name: str
    dims: tuple[Dim, ...]
    first: int  # the top-level equation that first writes it
    last: int  # the top-level equation that last reads it


@dataclass
class Emitter(TimeLoops, SourceWriter):
    rules: Mapping[type, Rule] = field(default_factory=dict)  # by op class: the code of ops that are not elementwise
    parallel: bool = False
    lines: list[str] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    buffers: list[Buffer] = field(default_factory=list)
    symbols: set[str] = field(default_factory=set)
    prefix: str = "kernel"  # of the names of the functions chunks become
    functions: list[tuple[str, list[str], list[str], bool]] = field(default_factory=list)  # name, args, body,
    # and whether it is the Python around chunks run on threads rather than a compiled function
    _chunk_start: int = 0
    _depth: int = 1
    _count: int = 0
    _plan: Plan | None = None
    _registers: dict[int, str] = field(default_factory=dict)
    _step: int = 0  # index of the top-level equation being emitted
    _buffer_of: dict[int, Buffer] = field(default_factory=dict)
    _constants: dict[int, str] = field(default_factory=dict)  # const values, inlined as literals
    _alias: dict[int, Var] = field(default_factory=dict)  # a view or piece -> the value whose buffer it uses
    _rows: tuple[str, str] | None = None  # (lo, hi) while emitting for one chunk of a batch split across threads
    _defined: dict[str, str] = field(default_factory=dict)  # a function's `renamed` text -> its name

    # --- values ---------------------------------------------------------------------------------

    def dim(self, d: Dim) -> str:
        if isinstance(d, int):
            return str(d)
        factors = d.split("*")
        self.symbols.update(f for f in factors if not f.isdigit())
        return " * ".join(f if f.isdigit() else f"n_{f}" for f in factors)

    def ref(self, var: Var) -> str:
        if id(var) in self.names:
            return self.names[id(var)]
        if self._plan and id(var) in self._plan.pieces:
            raise AssertionError(f"{var} is a piece of another value; loops read it, ops must not")
        return self.allocate(var)

    def bind(self, var: Var, expr: str) -> None:
        self.names[id(var)] = expr

    def allocate(self, var: Var) -> str:
        """A buffer for `var`, carved from the arena."""
        if var.type.dtype != "f32":
            raise NotImplementedError(f"buffers of {var.type.dtype}")
        name = f"buf{len(self.buffers)}"
        buffer = Buffer(name, var.shape or (1,), self._step, self._step)  # a scalar is one element
        self.buffers.append(buffer)
        self._buffer_of[id(var)] = buffer
        self.names[id(var)] = f"{name}[0]" if var.rank == 0 else name
        if self._rows and batch_leading(var):  # inside a chunk of rows: this chunk's rows of the buffer
            self.names[id(var)] = self.fresh(name)
            self.line(f"{self.names[id(var)]} = {name}[{self._rows[0]}:{self._rows[1]}]")
        return self.names[id(var)]

    def rows(self, expr: str, var: Var) -> str:
        """`expr`, restricted to the current chunk of rows when `var` has one row per sample."""
        return f"{expr}[{self._rows[0]}:{self._rows[1]}]" if self._rows and batch_leading(var) else expr

    @property
    def threaded(self) -> bool:
        """Whether code emitted here may run chunks on threads (never inside a time loop)."""
        return self.parallel and not self._in_scan

    def chunk_count(self, rows: str) -> str:
        """The number of chunks `rows` is split into: one per thread, at most one per row."""
        n = self.fresh("chunks")
        self.line(f"{n} = max(1, min(threads, {rows}))")  # `threads` is a kernel argument
        return n

    @contextmanager
    def row_chunks(
        self, rows: str, count: str | None = None, columns: ColumnSplit | None = None
    ) -> Iterator[tuple[str, str, str, str]]:
        """`count` chunks of `rows` (by default one per thread), run on as many threads by `run_chunks`;
        yields (chunk, count, lo, hi).

        The work of one chunk becomes a compiled function of its own, called on each thread; the kernel
        around it stays Python (see `kdsl.backends.cpu.support.entry.run_chunks`). With Numba's `prange` instead,
        each such kernel was compiled as a parallel region, which linked the chunk's function, and all it
        calls, into its code twice more: half of examples/mnist_lstm.kd's cold compile.

        With `columns`, when there is more than one part, every chunk takes all rows and is one part of a
        time loop split by columns (see `scan`); `run_parts` runs them, and the parts but the first write
        into buffers of their own.
        """
        n = count or self.chunk_count(rows)
        c, lo, hi, work = self.fresh("chunk"), self.fresh("lo"), self.fresh("hi"), self.fresh("work")
        parts = columns.parts if columns else ""
        with self.block(f"def {work}({c}, {parts}=1):" if columns else f"def {work}({c}):"):
            self.line(f"{lo} = {f'0 if {parts} > 1 else ' if columns else ''}{c} * {rows} // {n}")
            self.line(f"{hi} = {f'{rows} if {parts} > 1 else ' if columns else ''}({c} + 1) * {rows} // {n}")
            start, depth, self._depth = len(self.lines), self._depth, 1
            self.line(f"start_helpers(HELPER_STARTS, {c})")  # compiled, so the helpers find the GIL free
            yield c, n, lo, hi
            body = self.lines[start:]
            del self.lines[start:]
            self._depth = depth
            arguments = free_names(body)
            name = self.define("rows", arguments, body)
            call = f"{name}({', '.join(arguments)})"
            if columns:  # the parts but the first write what they compute for themselves into new buffers
                own = [f"np.empty_like({a})" if a in columns.own else a for a in arguments]
                self.either(f"{c} == 0 or {parts} == 1", call, f"{name}({', '.join(own)})")
            else:
                self.line(call)
        chunks = f"run_chunks({n}, {work})"
        if columns:
            self.either(f"{columns.count} > 1", f"run_parts({columns.count}, {work}, {columns.progress})", chunks)
        else:
            self.line(chunks)

    def either(self, condition: str, then: str, otherwise: str) -> None:
        """`then` if `condition` holds at run time, else `otherwise` (a line each)."""
        with self.block(f"if {condition}:"):
            self.line(then)
        with self.block("else:"):
            self.line(otherwise)

    def touch(self, var: Var) -> None:
        """Record a read of `var` at the current step, extending its buffer's lifetime."""
        while id(var) in self._alias:
            var = self._alias[id(var)]
        buffer = self._buffer_of.get(id(var))
        if buffer is not None:
            buffer.last = max(buffer.last, self._step)

    def index(self, var: Var, idx: Sequence[str]) -> str:
        if var.rank == 0:
            return self.ref(var)
        return f"{self.ref(var)}[{', '.join(idx)}]"

    def matrix(self, var: Var) -> str:
        """`var` as a 2-D matrix of its last axis (contiguous, for BLAS)."""
        if var.rank == 2:
            return self.ref(var)
        r, k = self.ref(var), self.dim(var.shape[-1])
        return f"{r}.reshape(({r}.size // {k}, {k}))"

    @contextmanager
    def loops(
        self, var: Var, skip_last: bool = False, over: str | None = None, first: tuple[str, str] | None = None
    ) -> Iterator[list[str]]:
        """Nested loops over `var`'s shape, the outermost over rows first[0] to first[1] when given.

        Sizes are read from the array `over` (by default `var`'s own).
        """
        rank = var.rank - (1 if skip_last else 0)
        idx = [self.fresh("i") for _ in range(rank)]
        depth = self._depth
        for axis, i in enumerate(idx):
            size = f"{over}.shape[{axis}]" if over is not None and axis < var.rank - 1 else None
            size = size or (self.dim(var.shape[axis]) if over is not None else f"{self.ref(var)}.shape[{axis}]")
            bounds = ", ".join(first) if first and axis == 0 else size
            self.line(f"for {i} in range({bounds}):")
            self._depth += 1
        yield idx
        self._depth = depth

    # --- programs -------------------------------------------------------------------------------

    def program(self, program: Program, fused: Plan, top: bool = False) -> None:
        """Emit `program` following its plan; at top level, kernels are grouped into functions of about CHUNK_LINES
        lines."""
        saved, self._plan = self._plan, fused
        for key, eqn in fused.constants.items():
            self._constants[key] = eqn.op.scalar(eqn.attrs)
        for kernel in self._plan.kernels:
            if top:
                self._step += 1
            for eqn in kernel.eqns:
                for x in eqn.inputs:
                    self.touch(x)
            start = len(self.lines)
            self.kernel(kernel)
            if top and any(line.lstrip().startswith("run_chunks(") for line in self.lines[start:]):
                # a kernel that runs chunks on threads is Python around compiled functions: on its own
                kernel_lines = self.lines[start:]
                del self.lines[start:]
                self.close_chunk()
                self.lines += kernel_lines
                self.close_chunk(threaded=True)
            elif top and len(self.lines) - self._chunk_start >= CHUNK_LINES:
                self.close_chunk()
        if top:
            self.close_chunk()
            self._step += 1
            for var in program.outputs:
                self.touch(var)
        self._plan = saved

    def kernel(self, kernel: Kernel) -> None:
        if id(kernel.eqns[0]) in self._summed_by_chunks:
            return
        if kernel.kind == "loop":
            self.fused_loop(kernel)
        elif kernel.kind == "view":
            self.view(kernel.eqns[0])
        else:
            self.op(kernel.eqns[0])

    def op(self, eqn: Eqn) -> None:
        """The code of an op that is not elementwise, by its rule."""
        rule = self.rules.get(type(eqn.op))
        if rule is None:
            raise NotImplementedError(f"`{eqn.op.name}` has no CPU rule")
        rule(self, eqn)

    def close_chunk(self, threaded: bool = False) -> None:
        """Make the lines since the last chunk a function of the arrays they name, and call it."""
        body = self.lines[self._chunk_start :]
        if not body:
            return
        pattern = r"\b(buf\d+|a\d+_\w+|n_[A-Za-z_]\w*|threads|columns|small_product)\b"
        arguments = list(dict.fromkeys(re.findall(pattern, "\n".join(body))))
        name = self.define("part", arguments, body, threaded)
        del self.lines[self._chunk_start :]
        self.line(f"{name}({', '.join(arguments)})")
        self._chunk_start = len(self.lines)

    def define(self, kind: str, arguments: list[str], body: list[str], threaded: bool = False) -> str:
        """The name of a new function of `arguments` running `body`, or of an earlier one that differs from it only in
        the names of its arguments and variables (the time loops of two layers of one kind and size): compiled
        once, it is called by both."""
        key = renamed(arguments, body, threaded)
        if key not in self._defined:
            self._defined[key] = name = f"_{self.prefix}_{kind}{len(self.functions)}"
            self.functions.append((name, arguments, body, threaded))
        return self._defined[key]

    def view(self, eqn: Eqn) -> None:
        assert self._plan is not None
        free = id(eqn) in self._plan.free
        if free and isinstance(eqn.op, Concat):  # computed in place: its pieces were stored into it
            for piece in eqn.inputs:
                self._alias[id(piece)] = eqn.out
            return
        for out in eqn.outputs:
            self._alias[id(out)] = eqn.inputs[0]
        if not free:
            self.op(eqn)

    def fused_loop(self, kernel: Kernel) -> None:
        assert self._plan is not None
        shape_var = kernel.eqns[-1].out
        if shape_var.rank == 0:
            for eqn in kernel.eqns:
                args = [self.load(x, [], ()) for x in eqn.inputs]
                self.line(f"{self.ref(eqn.out)} = {eqn.op.scalar(eqn.attrs, *args)}")
            return
        anchor = next((e.out for e in kernel.eqns if id(e.out) not in self._plan.registers), shape_var)
        for eqn in kernel.eqns:  # buffers first, so none is carved inside the loop
            if id(eqn.out) not in self._plan.registers:
                self.store_target(eqn.out)
            for whole, _ in self._plan.copies.get(id(eqn.out), ()):
                self.store_target(whole)
        # a view read in the loop (`buf.reshape(...)`) is named once before it, not made at every element:
        # (reshaping at every element costs far more than the loop's arithmetic)
        read = [self.whole(x) for e in kernel.eqns for x in e.inputs]
        views = {id(x): self.names[id(x)] for x in read if "(" in self.names.get(id(x), "")}
        for key, expr in views.items():
            self.names[key] = self.fresh("view")
            self.line(f"{self.names[key]} = {expr}")
        with self.loops(anchor, over=self.store_target(anchor)) as idx:
            for eqn in kernel.eqns:
                args = [self.load(x, idx, kernel.shape) for x in eqn.inputs]
                value = eqn.op.scalar(eqn.attrs, *args)
                register = self.fresh("r")
                self._registers[id(eqn.out)] = register
                self.line(f"{register} = {value}")
                if id(eqn.out) not in self._plan.registers:
                    self.line(f"{self.place(eqn.out, idx)} = {register}")
                for whole, offset in self._plan.copies.get(id(eqn.out), ()):
                    self.line(f"{self.place(whole, [*idx[:-1], f'{offset} + {idx[-1]}'])} = {register}")
        for eqn in kernel.eqns:
            self._registers.pop(id(eqn.out), None)
        self.names.update(views)  # later code may sit in another function, where the local does not exist

    def whole(self, var: Var) -> Var:
        """The value whose buffer `var` lives in: itself, or the value it is a piece of."""
        while self._plan and id(var) in self._plan.pieces:
            var = self._plan.pieces[id(var)][0]
        return var

    def store_target(self, var: Var) -> str:
        """The array a loop iterates over: the buffer of `var` (or of the whole `var` is a piece of)."""
        return self.ref(self.whole(var))

    def place(self, var: Var, idx: Sequence[str]) -> str:
        """Where element `idx` of `var` lives: its own buffer, or a slice of the value it is a piece of."""
        assert self._plan is not None
        return self.index(*piece_index(self._plan, var, idx))

    def load(self, var: Var, idx: Sequence[str], shape: tuple[Dim, ...]) -> str:
        """Element `idx` of the loop's iteration space, read from `var` with NumPy broadcasting."""
        if id(var) in self._registers:
            return self._registers[id(var)]
        if id(var) in self._constants:
            return self._constants[id(var)]
        if var.rank == 0:
            return self.ref(var)
        return self.place(var, broadcast_index(var, shape, idx))


# the names `SourceWriter.fresh` makes (`carry_20`, `buf5_21`), which differ between otherwise equal functions
LOCAL_NAME = re.compile(r"[a-z][a-z0-9]*_\d+")
WORD = re.compile(r"\b\w+\b")


def renamed(arguments: list[str], body: list[str], threaded: bool) -> str:
    """A function's text with its arguments and local variables renamed in order of appearance: equal for two
    functions that compute the same from their arguments."""
    names = {argument: f"v{i}" for i, argument in enumerate(arguments)}

    def rename(match: re.Match) -> str:
        word = match.group(0)
        return names.setdefault(word, f"v{len(names)}") if word in names or LOCAL_NAME.fullmatch(word) else word

    return f"{threaded}({len(arguments)})\n" + WORD.sub(rename, "\n".join(body))


def free_names(lines: list[str]) -> list[str]:
    """The variables a function body reads but does not assign, in order: the arguments it needs."""
    table = symtable.symtable("def f():\n" + "\n".join(lines) + "\n", "<kernel>", "exec").get_children()[0]
    free = [s.get_name() for s in table.get_symbols() if s.is_global()]
    module_level = set(dir(builtins)) | {"np", "math", "numba"}
    # the support functions a module imports; arrays (the helpers' start flags) stay arguments, as Numba would
    # freeze a global array into the compiled code
    support = [(module, name) for module in (blas, entry, layout, loop_products, spin) for name in module.__all__]
    module_level |= {name for module, name in support if callable(getattr(module, name))}
    return [n for n in free if n not in module_level and not n.startswith("_") and not n.endswith("_f32")]
