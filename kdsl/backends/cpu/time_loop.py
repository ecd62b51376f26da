"""Time loops on the CPU target: a scan becomes a plain `for` loop over the steps in the generated function.

Its cell runs with no Python in between, and its per-step buffers are reused at every step: carries
alternate between two buffers, each step's outputs go straight into their slot of the stacked result.
Before a long loop, each weight the cell multiplies by is prepared once (`kdsl.backends.cpu.support.loop_products`).
With threads, the batch is split into chunks of rows, each running the whole loop on its rows; a batch
too small for that can split each step's products by columns instead (`kdsl.backends.cpu.policy` decides).

`TimeLoops` is a part of the `Emitter`: the state and methods it needs for time loops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

from kdsl.backends.cpu.policy import long_loop, prepares_weights, rows_independent, splits_columns, weight_products
from kdsl.ir.ops.reduce import ReduceSum
from kdsl.ir.program import Eqn, Var


class ColumnSplit(NamedTuple):
    """A time loop that may run as parts split by columns (see `TimeLoops.scan`), as names in the code."""

    count: str  # the number of parts, in the kernel
    parts: str  # the same, as a parameter of each chunk's work
    progress: str  # the parts' progress counters (see `meet`)
    own: set[str]  # the buffers each part but the first writes into a copy of its own


@dataclass
class TimeLoops:
    _in_scan: int = 0
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

    def right_operand(self, w: Var, transposed: bool) -> str:
        """`w` or its transpose as the right operand of a product.

        A long time loop's weight read transposed at every step is transposed into a contiguous copy once,
        before the loop: BLAS reads a contiguous operand faster than a transposed view.
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
            split = splits_columns(eqn)
            if split:  # `columns` is a kernel argument: more than one when the kernel splits such loops
                self.column_loops = True
                count = self.fresh("chunks")
                self.line(f"{count} = 1 if columns > 1 else max(1, min(threads, {batch}))")
            else:
                count = self.chunk_count(batch)
            weights = self._prepare_weights(eqn, f"-(-{batch} // {count})")  # once, for every chunk's rows
            columns, rows_of_partials = None, count
            if split:
                progress = self.fresh("progress")
                self.line(f"{progress} = progress_counters(columns)")
                columns = ColumnSplit("columns", self.fresh("parts"), progress, set())
                rows_of_partials = f"max({count}, columns)"
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
        own thread, where one thread would sum them all from memory afterwards."""
        stacked = {id(v) for v in scan.outputs[scan.attrs["num_carry"] :]}
        sums = [k.eqns[0] for k in self._plan.kernels if k.kind == "op" and isinstance(k.eqns[0].op, ReduceSum)]
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
            self._copy(name, self.rows(self.ref(init), init), inner)
            current.append(name)
        for outer, inner in zip(eqn.inputs[nc + nx :], body.inputs[nc + nx :]):
            self.bind(inner, self.fresh("w"))
            self.line(f"{self.ref(inner)} = {self.rows(self.ref(outer), inner)}")
            products = weight_products(eqn, inner)
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
            self.program(body, self._plan.body(eqn))
            for destination, var in copies:
                self._copy(destination, self.ref(var), var)
            for j, total in totals:
                self._sum_step_rows(steps_of[j], total)
            for k, name in enumerate(current):
                if k in swapped:
                    self.line(f"{name}, {swapped[k]} = {swapped[k]}, {name}")
                else:
                    self.line(f"{name} = {self.ref(body.outputs[k])}")
        self._in_scan -= 1
        for final, name, var in zip(finals, current, eqn.outputs[:nc]):
            self._copy(self.rows(final, var), name, var)

    def _copy(self, destination: str, source: str, var: Var) -> None:
        """`destination[...] = source`, element by element: Numba compiles an array-to-array assignment with a
        formatter for its shape-mismatch message, seconds of compile time once per process."""
        names = []
        for expr in (destination, source):
            names.append(expr if expr.isidentifier() else self.fresh("view"))
            if names[-1] != expr:
                self.line(f"{names[-1]} = {expr}")
        with self.loops(var, over=names[0]) as idx:
            at = ", ".join(idx)
            self.line(f"{names[0]}[{at}] = {names[1]}[{at}]")

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
        inside the cell's loop kept LLVM from vectorizing it."""
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
            products = weight_products(eqn, inner)
            for transposed in sorted({bool(e.attrs.get("transpose_b")) for e in products}):
                weights[(id(inner), transposed)] = prepared = self.fresh("prepared")
                # `small_product` is a kernel argument, as `threads` is
                self.line(f"{prepared} = prepare_weight({self.ref(outer)}, {transposed}, {rows}, small_product)")
        return weights
