"""What a model needs in memory, so that `check` and `summary` warn before a model that cannot fit is compiled.

A batch's buffers are estimated from the training program (or the forward pass, with no train block): the
most bytes its values hold at one time, each value living from the step that makes it to its last reader.
Backends plan their arenas from the same lifetimes, so the estimate is close to what they allocate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from kdsl.ir.graph import Graph
from kdsl.ir.program import Program
from kdsl.ir.types import BATCH, numel
from kdsl.memory import BYTES_PER_NUMBER, format_bytes
from kdsl.pipeline import compile_programs
from kdsl.runtime.optimizers import get as get_optimizer


@dataclass(frozen=True)
class Footprint:
    """Bytes a model needs: its weights; for training, the optimizer's slots; and the buffers of one batch of
    `batch` samples, gradients included (symbolic dims other than the batch taken as 1: `unsized`)."""

    weights: int
    training: int
    buffers: int
    batch: int
    unsized: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.weights + self.training + self.buffers

    def warning(self, available: int | None) -> str | None:
        """What will not fit in `available` bytes and what to do about it, or None when it all fits."""
        if available is None or self.total <= available:
            return None
        have = f"more than this machine's {format_bytes(available)} of memory"
        if self.weights > available:
            return f"its weights need {format_bytes(self.weights)}, {have}: make the layers smaller"
        if self.weights + self.training > available:
            kept = format_bytes(self.weights + self.training)
            return f"its weights and optimizer slots need {kept}, {have}: make the layers smaller"
        grows = f" (and more for each `{'`, `'.join(self.unsized)}`)" if self.unsized else ""
        return (
            f"a batch of {self.batch} needs about {format_bytes(self.total)}{grows}, {have}: use a smaller batch_size"
        )


def footprint(graph: Graph, batch: int | None = None) -> Footprint:
    """What `graph` needs to train as its train block says (or to predict, with none), for a batch of `batch`
    samples (by default the train block's batch_size, else 32)."""
    training = graph.train is not None
    batch = batch or (graph.train.batch_size if graph.train else 32)
    compilation = compile_programs(graph, target="numpy", training=training)
    program = compilation.entries[-1].program
    weights = graph.param_count() * BYTES_PER_NUMBER
    kept = 0
    if graph.train is not None:
        slots = get_optimizer(graph.train.optimizer).slots_per_weight()
        kept = graph.param_count(trainable=True) * BYTES_PER_NUMBER * slots
    params = {id(v) for v in program.inputs[len(program.inputs) - len(compilation.param_names) :]}
    peak, unsized = peak_bytes(program, batch, skip=params)
    return Footprint(weights, kept, peak, batch, unsized)


def peak_bytes(program: Program, batch: int, skip: set[int] = frozenset()) -> tuple[int, tuple[str, ...]]:
    """The most bytes `program`'s values hold at once for a batch of `batch` (values in `skip` aside), and the
    symbolic dims taken as 1 to count them."""
    last_use = {id(v): len(program.eqns) for v in program.outputs}
    for step, eqn in enumerate(program.eqns):
        for v in eqn.inputs:
            last_use[id(v)] = max(last_use.get(id(v), step), step)
    sizes: defaultdict[str, int] = defaultdict(lambda: 1, {BATCH: batch})  # records every other symbol it is asked

    def size(var) -> int:
        return numel(var.shape, sizes) * BYTES_PER_NUMBER

    live = {id(v): size(v) for v in program.inputs if id(v) not in skip}
    total = peak = sum(live.values())
    for step, eqn in enumerate(program.eqns):
        for v in eqn.outputs:
            total += size(v) - live.get(id(v), 0)
            live[id(v)] = size(v)
        peak = max(peak, total)
        for v in eqn.inputs:
            if last_use.get(id(v)) == step:
                total -= live.pop(id(v), 0)
    return peak, tuple(sorted(set(sizes) - {BATCH}))
