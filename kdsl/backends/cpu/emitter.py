"""Numba source for a lowered program, following its fusion plan.

Every value the plan materializes gets a buffer carved from one preallocated float32
arena (see `kdsl.passes.memory`), so a step allocates nothing. Fused loops keep their
intermediate values in registers. A scan becomes a plain `for` loop in the same
function: its cell runs with no Python in between, and its per-step buffers are
reused at every step.
"""

from __future__ import annotations

import builtins
import math
import re
import symtable
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import NamedTuple

from kdsl.backends.cpu.loop_products import SUPPORT_FUNCTIONS
from kdsl.backends.source import SourceWriter
from kdsl.ir.program import Eqn, Program, Var
from kdsl.ir.types import BATCH, Dim
from kdsl.passes.fuse import Kernel, Plan, plan

# Numba's compile time grows faster than the length of a function: a training step of 1,000
# lines took 98 s as one function, while one function per kernel cost a fixed overhead each
# (examples/mnist_lstm.kd: 10.5 s against 5.7 s). Chunks of this many lines sit between
# (a masked two-output training step: 131 s as one function, 62 s in 150-line chunks).
CHUNK_LINES = 400


class ColumnSplit(NamedTuple):
    """A time loop that may run as parts split by columns (see `Emitter.scan`), as names in the code."""

    count: str  # the number of parts, in the kernel
    parts: str  # the same, as a parameter of each chunk's work
    progress: str  # the parts' progress counters (see `meet`)
    own: set[str]  # the buffers each part but the first writes into a copy of its own


@dataclass
class Buffer:
    name: str
    dims: tuple[Dim, ...]
    first: int  # the top-level equation that first writes it
    last: int  # the top-level equation that last reads it


@dataclass
class Emitter(SourceWriter):
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
    _in_scan: int = 0
    _buffer_of: dict[int, Buffer] = field(default_factory=dict)
    _constants: dict[int, str] = field(default_factory=dict)  # const values, inlined as literals
    _alias: dict[int, Var] = field(default_factory=dict)  # a view or piece -> the value whose buffer it uses
    _rows: tuple[str, str] | None = None  # (lo, hi) while emitting for one chunk of a batch split across threads
    _transposed: dict[int, str] = field(default_factory=dict)  # a time loop's weight -> its transpose, made once
    _prepared: dict[tuple[int, bool], tuple[str, str]] = field(default_factory=dict)  # (weight, transposed) -> its
    # preparation for products inside a time loop and that preparation's scratch (see `loop_products`)
    short_loops: bool = False  # whether a time loop is too short to prepare its weights
    column_loops: bool = False  # whether a time loop may split its products' columns across threads
    _summed_by_chunks: set[int] = field(default_factory=set)  # sums a time loop's chunks of rows computed
    # a folded projection a time loop reads row by row (`gather_matmul` with `in_loop`) -> (the projected
    # table, the condition that it is used, and the id of a (step, row) as code)
    rows_in_loop: dict[int, tuple[Var, str, Callable[..., str]]] = field(default_factory=dict)
    # while emitting a time loop that may be split by columns: (the part, the number of parts, their
    # progress counters) as code, and the buffers its parts share (the products' outputs)
    _columns: tuple[str, str, str] | None = None
    _exchanged: set[str] = field(default_factory=set)

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
        around it stays Python (see `kdsl.backends.cpu.entry.run_chunks`). With Numba's `prange` instead,
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
            name = f"_{self.prefix}_rows{len(self.functions)}"
            self.functions.append((name, arguments, body, False))
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

    def right_operand(self, w: Var, transposed: bool) -> str:
        """`w` or its transpose as the right operand of a product.

        A time loop's weight read transposed at every step is transposed into a contiguous copy
        once, before the loop: OpenBLAS took 187 µs per 16x1024 by (256x1024)ᵀ product through a
        transposed view, 126 µs with the copy (the backward step of an LSTM(256)).
        """
        if transposed:
            return self._transposed.get(id(w), f"{self.ref(w)}.T")
        return self.ref(w)

    def prepared_weight(self, w: Var, transposed: bool) -> tuple[str, str] | None:
        """A time loop's weight as prepared before the loop (see `loop_products`), with its scratch."""
        return self._prepared.get((id(w), transposed))

    def step_product(self, a: Var, y: Var, prepared: tuple[str, str]) -> None:
        """y = a·w in a time loop, with w and its scratch as prepared before the loop; in a loop split by
        columns, each part computes its share of the columns into the buffer all parts read."""
        operands = f"{self.matrix(a)}, {prepared[0]}, {prepared[1]}, small_product, {self.matrix(y)}"
        if self._columns is None:
            self.line(f"step_product({operands})")
            return
        self._exchanged.add(self._buffer_of[id(self.whole(y))].name)
        self.line(f"split_step_product({operands}, {', '.join(self._columns)})")

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

    def program(self, program: Program, top: bool = False) -> None:
        """Emit `program`; at top level, kernels are grouped into functions of about CHUNK_LINES lines."""
        saved, self._plan = self._plan, plan(program)
        for eqn in program.eqns:
            if eqn.op.name == "const":
                self._constants[id(eqn.out)] = eqn.op.scalar(eqn.attrs)
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
            kernel.eqns[0].op.cpu(self, kernel.eqns[0])

    def close_chunk(self, threaded: bool = False) -> None:
        """Make the lines since the last chunk a function of the arrays they name, and call it."""
        body = self.lines[self._chunk_start :]
        if not body:
            return
        pattern = r"\b(buf\d+|a\d+_\w+|n_[A-Za-z_]\w*|threads|columns|small_product)\b"
        arguments = list(dict.fromkeys(re.findall(pattern, "\n".join(body))))
        name = f"_{self.prefix}_part{len(self.functions)}"
        self.functions.append((name, arguments, body, threaded))
        del self.lines[self._chunk_start :]
        self.line(f"{name}({', '.join(arguments)})")
        self._chunk_start = len(self.lines)

    def view(self, eqn: Eqn) -> None:
        if eqn.op.name == "concat":  # computed in place: its pieces were stored into it
            for piece in eqn.inputs:
                self._alias[id(piece)] = eqn.out
            return
        for out in eqn.outputs:
            self._alias[id(out)] = eqn.inputs[0]
        if not eqn.attrs.get("free"):
            eqn.op.cpu(self, eqn)

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
        # reshaping inside a loop over 32x512 elements took 0.37 ms
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
        if id(var) in self._plan.pieces:
            whole, offset = self._plan.pieces[id(var)]
            return self.place(whole, [*idx[:-1], f"{offset} + {idx[-1]}"])
        return self.index(var, idx)

    def load(self, var: Var, idx: Sequence[str], shape: tuple[Dim, ...]) -> str:
        """Element `idx` of the loop's iteration space, read from `var` with NumPy broadcasting."""
        if id(var) in self._registers:
            return self._registers[id(var)]
        if id(var) in self._constants:
            return self._constants[id(var)]
        if var.rank == 0:
            return self.ref(var)
        lead = len(shape) - var.rank
        own = [("0" if d == 1 and shape[lead + a] != 1 else idx[lead + a]) for a, d in enumerate(var.shape)]
        return self.place(var, own)

    # --- scan -----------------------------------------------------------------------------------

    def scan(self, eqn: Eqn) -> None:
        """A time loop; with `parallel`, one per chunk of the batch, on all threads (rows are independent).

        A batch too small for a chunk a thread (the kernel's `threads` is then 1) can still use the threads
        (its `columns`) in a long loop multiplying by a large weight (`splits_columns`): each thread runs the
        whole loop on every row, as one part of it, and computes its share of each step's products; the
        parts meet twice a step (`split_step_product`), and compute the rest of the cell each for itself.
        Only the first part writes the loop's results; the others write buffers of their own.
        """
        if self.threaded and rows_independent(eqn):
            first_buffer = len(self.buffers)
            for var in eqn.outputs:  # whole buffers; each chunk takes its rows
                self.ref(var)
            batch = f"{self.ref(eqn.inputs[eqn.attrs['num_carry']])}.shape[1]"
            count = self.chunk_count(batch)
            weights = self._prepare_weights(eqn, f"-(-{batch} // {count})")  # once, for every chunk's rows
            columns, rows_of_partials = None, count
            if splits_columns(eqn):
                self.column_loops = True
                split, progress = self.fresh("parts"), self.fresh("progress")
                self.line(f"{split} = columns if {count} == 1 else 1")
                self.line(f"{progress} = progress_counters({split})")
                columns = ColumnSplit(split, self.fresh("parts"), progress, set())
                rows_of_partials = f"max({count}, {split})"
            sums = [(s, self.fresh("partial")) for s in self._sums_of_steps(eqn)]  # with each one's partial sums
            for s, partials in sums:
                self.line(f"{partials} = np.zeros(({rows_of_partials}, {self.ref(s.out)}.shape[0]), np.float32)")
            with self.row_chunks(batch, count, columns) as (chunk, _, *rows):
                self._rows = tuple(rows)
                if columns:
                    self._columns = (chunk, columns.parts, columns.progress)
                self._time_loop(eqn, weights, [(s.inputs[0], f"{partials}[{chunk}]") for s, partials in sums])
                self._rows = self._columns = None
                if columns:
                    own = {b.name for b in self.buffers[first_buffer:]}
                    columns.own.update(own - self._exchanged)
            for s, partials in sums:  # a loop split by columns has its sums in the first part's row
                self.line(f"{partials}[:{count}].sum(axis=0, out={self.ref(s.out)})")
                self._summed_by_chunks.add(id(s))
        else:
            self._time_loop(eqn, self._prepare_weights(eqn, f"{self.ref(eqn.inputs[0])}.shape[0]"))

    def _sums_of_steps(self, scan: Eqn) -> list[Eqn]:
        """The sums over time and batch of `scan`'s stacked outputs later in the program (a cell's bias
        gradient): each chunk of rows sums its own at each step, while they are still in cache, on its
        own thread, where one thread would sum them all from memory (W4: 1.7 ms for two; by each thread
        after its time loop, 0.8–1.3 ms; at each step, up to 0.9 ms less than that)."""
        stacked = {id(v) for v in scan.outputs[scan.attrs["num_carry"] :]}
        sums = [k.eqns[0] for k in self._plan.kernels if k.kind == "op" and k.eqns[0].op.name == "reduce_sum"]
        return [
            s
            for s in sums
            if id(s.inputs[0]) in stacked and s.inputs[0].rank == 3 and tuple(s.attrs["axes"]) == (0, 1)
            and not s.attrs.get("keepdims")
        ]  # fmt: skip

    def _sum_step_rows(self, rows: str, total: str) -> None:
        """`total` (this chunk's row of partial sums) += the chunk's `rows` of one step."""
        i, j = self.fresh("i"), self.fresh("j")
        with self.block(f"for {i} in range({rows}.shape[0]):"), self.block(f"for {j} in range({rows}.shape[1]):"):
            self.line(f"{total}[{j}] += {rows}[{i}, {j}]")

    def _time_loop(self, eqn: Eqn, weights: dict[tuple[int, bool], str], sums=()) -> None:
        """The loop over steps; `weights` are the cell's weights as prepared before it (see `_prepare_weights`),
        and each of `sums`, (a stacked output, its partial sums), takes in each step's rows of it."""
        body, nc, nx = eqn.attrs["body"], eqn.attrs["num_carry"], eqn.attrs["num_xs"]
        self.short_loops |= not long_loop(eqn)
        steps = f"{self.ref(eqn.inputs[nc])}.shape[0]"
        stacked = [self.ref(v) for v in eqn.outputs[nc:]]
        finals = [self.ref(v) for v in eqn.outputs[:nc]]
        current = []
        for init, inner in zip(eqn.inputs[:nc], body.inputs[:nc]):
            name = self.fresh("carry")
            self.line(f"{name} = {self.allocate(inner)}")
            self.line(f"{name}[...] = {self.rows(self.ref(init), init)}")
            current.append(name)
        for outer, inner in zip(eqn.inputs[nc + nx :], body.inputs[nc + nx :]):
            self.bind(inner, self.fresh("w"))
            self.line(f"{self.ref(inner)} = {self.rows(self.ref(outer), inner)}")
            products = [e for e in body.eqns if e.op.name == "matmul" and e.inputs[1] is inner]
            unprepared = long_loop(eqn) and not prepares_weights(eqn)
            if unprepared and any(e.attrs.get("transpose_b") for e in products):
                self._transposed[id(inner)] = self.fresh("wt")
                self.line(f"{self._transposed[id(inner)]} = np.ascontiguousarray({self.ref(inner)}.T)")
        for key, prepared in weights.items():  # a scratch of its own for each chunk of rows
            scratch = self.fresh("scratch")
            self.line(f"{scratch} = step_scratch({prepared}, {current[0]}.shape[0], small_product)")
            self._prepared[key] = (prepared, scratch)
        picked = {id(outer): self._step_rows_source(outer) for outer in eqn.inputs[nc : nc + nx]
                  if id(outer) in self.rows_in_loop}  # fmt: skip
        inputs = {id(v) for v in body.inputs}
        swapped = {}  # carry index -> the second buffer its new value is written to
        for k, var in enumerate(body.outputs[:nc]):
            if id(var) in inputs or not any(y is var for y in body.outputs[nc:]):
                swapped[k] = self.fresh("next")
                self.line(f"{swapped[k]} = {self.allocate(var)}")
        outputs = [id(v) for v in eqn.outputs[nc:]]
        totals = []  # (the stacked output's index, its partial row, named once rather than indexed at every element)
        for stacked_var, partial in sums:
            totals.append((outputs.index(id(stacked_var)), self.fresh("sum")))
            self.line(f"{totals[-1][1]} = {partial}")
        t, it = self.fresh("t"), self.fresh("step")
        self._in_scan += 1
        with self.block(f"for {it} in range({steps}):"):
            self.line(f"{t} = {steps} - 1 - {it}" if eqn.attrs["reverse"] else f"{t} = {it}")
            for name, inner in zip(current, body.inputs[:nc]):
                self.bind(inner, name)
            for outer, inner in zip(eqn.inputs[nc : nc + nx], body.inputs[nc : nc + nx]):
                if id(outer) in picked:
                    self._pick_step_rows(outer, inner, t, *picked[id(outer)])
                    continue
                self.bind(inner, self.fresh("x"))
                self.line(f"{self.ref(inner)} = {self.rows(f'{self.ref(outer)}[{t}]', inner)}")
            steps_of = []
            for name, var in zip(stacked, body.outputs[nc:]):
                steps_of.append(self.fresh("y"))
                self.line(f"{steps_of[-1]} = {self.rows(f'{name}[{t}]', var)}")
            copies = []  # (destination, value) for outputs that a body value cannot be computed into directly
            for j, var in enumerate(body.outputs[nc:]):
                if id(var) in inputs or id(var) in self.names:
                    copies.append((steps_of[j], var))
                else:
                    self.bind(var, steps_of[j])
            for k, var in enumerate(body.outputs[:nc]):
                if k in swapped and id(var) in inputs:
                    copies.append((swapped[k], var))
                elif k in swapped:
                    self.bind(var, swapped[k])
            self.program(body)
            for destination, var in copies:
                self.line(f"{destination}[...] = {self.ref(var)}")
            for j, total in totals:
                self._sum_step_rows(steps_of[j], total)
            for k, name in enumerate(current):
                if k in swapped:
                    self.line(f"{name}, {swapped[k]} = {swapped[k]}, {name}")
                else:
                    self.line(f"{name} = {self.ref(body.outputs[k])}")
        self._in_scan -= 1
        for final, name, var in zip(finals, current, eqn.outputs[:nc]):
            self.line(f"{self.rows(final, var)}[...] = {name}")

    def _step_rows_source(self, outer: Var) -> tuple[str, str, str]:
        """For a sequence the loop reads through rows picked at each step (`rows_in_loop`): before the loop,
        the array holding the rows, whether they are picked by id, and room for one step's rows."""
        projected, by_id, _ = self.rows_in_loop[id(outer)]
        self.touch(projected)  # read here, so no later buffer may take its place before the loop ends
        source, picking, step = self.fresh("source"), self.fresh("by_id"), self.fresh("rows")
        sequence = self.ref(outer)  # gathered when the table was not projected
        self.line(f"{picking} = {by_id}")
        rows = f"{sequence}.shape[0] * {sequence}.shape[1], {sequence}.shape[2]"
        self.line(f"{source} = {self.ref(projected)} if {picking} else {sequence}.reshape(({rows}))")
        count = f"{self._rows[1]} - {self._rows[0]}" if self._rows else f"{sequence}.shape[1]"
        self.line(f"{step} = np.empty(({count}, {source}.shape[1]), np.float32)")
        return source, picking, step

    def _pick_step_rows(self, outer: Var, inner: Var, t: str, source: str, picking: str, step: str) -> None:
        """Copy step `t`'s rows for this chunk's samples into `step`: from the projected table by id, or
        from the gathered sequence. One row at a time, in cache: indexing the table element by element
        inside the cell's loop kept LLVM from vectorizing it (W3 at batch 256: 86 ms against 47)."""
        _, _, id_of = self.rows_in_loop[id(outer)]
        i, j, row = self.fresh("i"), self.fresh("j"), self.fresh("row")
        with self.block(f"for {i} in range({step}.shape[0]):"):
            sample = f"{self._rows[0]} + {i}" if self._rows else i
            at = f"{id_of(t, sample)} if {picking} else {t} * {self.ref(outer)}.shape[1] + {sample}"
            self.line(f"{row} = {source}[{at}]")
            with self.block(f"for {j} in range({row}.shape[0]):"):
                self.line(f"{step}[{i}, {j}] = {row}[{j}]")
        self.bind(inner, step)

    def _prepare_weights(self, eqn: Eqn, rows: str) -> dict[tuple[int, bool], str]:
        """Before a long time loop: each weight its cell multiplies by, prepared for products of up to `rows`
        rows (see `loop_products`); keyed by (the cell's weight, whether it is read transposed)."""
        body, nc, nx = eqn.attrs["body"], eqn.attrs["num_carry"], eqn.attrs["num_xs"]
        if not prepares_weights(eqn):
            return {}
        weights = {}
        for outer, inner in zip(eqn.inputs[nc + nx :], body.inputs[nc + nx :]):
            products = [e for e in body.eqns if e.op.name == "matmul" and e.inputs[1] is inner]
            for transposed in sorted({bool(e.attrs.get("transpose_b")) for e in products}):
                weights[(id(inner), transposed)] = prepared = self.fresh("prepared")
                # `small_product` is a kernel argument, as `threads` is
                self.line(f"{prepared} = prepare_weight({self.ref(outer)}, {transposed}, {rows}, small_product)")
        return weights


# A transposed copy of a weight costs about a pass over it with a fresh allocation (2 ms for a GRU(512)'s
# 3 MB kernel) and saves about a third of each step's product: it pays from about ten steps on.
MIN_STEPS_TO_TRANSPOSE = 16


def long_loop(scan: Eqn) -> bool:
    """Whether a time loop runs long enough to pay for work done once before it (unknown lengths count as long)."""
    steps = scan.inputs[scan.attrs["num_carry"]].shape[0]
    return not isinstance(steps, int) or steps >= MIN_STEPS_TO_TRANSPOSE


def prepares_weights(scan: Eqn) -> bool:
    """Whether a time loop's products use weights prepared before it (see `loop_products`): long loops
    whose state has one row per sample, as the prepared products take rows."""
    return long_loop(scan) and batch_leading(scan.attrs["body"].inputs[0])


# A time loop at a batch too small for a chunk of rows a thread splits the columns of its products across
# the threads when it multiplies by a weight of at least this many floats (1 MB, more than a Zen 3 core's
# L2). At batch 1 on the Zen 3, an LSTM(512) over 100 steps (a 4 MB weight) ran 7.0–7.4 ms split against
# 8.9–9.3 ms on one thread (PyTorch: 8.9–9.3); an LSTM(128)'s loop (256 KB) gained nothing: each step's product took
# 2.1 µs on half the columns against 3.7 µs on all, but the second thread joined 35–70 µs late (it needs
# the GIL to start) and the parts exchange the product's cache lines at every step.
MIN_SPLIT_WEIGHT = 262_144


def splits_columns(scan: Eqn) -> bool:
    """Whether a time loop at a small batch runs as parts split by columns (see `Emitter.scan`): a long loop
    whose products, by prepared weights of which one is large, are not among the cell's outputs (each part
    keeps those for itself, while a product's columns come from all parts)."""
    body, nc, nx = scan.attrs["body"], scan.attrs["num_carry"], scan.attrs["num_xs"]
    weights = {id(w) for w in body.inputs[nc + nx :]}
    products = [e for e in body.eqns if e.op.name == "matmul" and id(e.inputs[1]) in weights]
    outputs = {id(v) for v in body.outputs}
    large = any(math.prod(e.inputs[1].shape) >= MIN_SPLIT_WEIGHT for e in products)
    return prepares_weights(scan) and large and not any(id(e.out) in outputs for e in products)


def free_names(lines: list[str]) -> list[str]:
    """The variables a function body reads but does not assign, in order: the arguments it needs."""
    table = symtable.symtable("def f():\n" + "\n".join(lines) + "\n", "<kernel>", "exec").get_children()[0]
    free = [s.get_name() for s in table.get_symbols() if s.is_global()]
    module_level = set(dir(builtins)) | {"np", "math", "numba", "run_chunks", "start_helpers", "product"}
    module_level |= set(SUPPORT_FUNCTIONS)
    return [n for n in free if n not in module_level and not n.startswith("_") and not n.endswith("_f32")]


def batch_leading(var: Var) -> bool:
    return var.rank > 0 and var.shape[0] == BATCH


def rows_independent(eqn: Eqn) -> bool:
    """Whether a scan's cell treats each sample apart, so a chunk of the batch can run its own time loop."""
    body, nc, nx = eqn.attrs["body"], eqn.attrs["num_carry"], eqn.attrs["num_xs"]
    if not all(batch_leading(v) for v in [*body.inputs[: nc + nx], *body.outputs]):
        return False
    for e in body.eqns:
        row_wise = (
            e.op.elementwise
            or (e.op.name == "matmul" and not batch_leading(e.inputs[1]))
            or (e.op.name in ("split", "concat") and e.attrs["axis"] == e.inputs[0].rank - 1)
        )
        if not row_wise:
            return False
    return True
