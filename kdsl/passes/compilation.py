"""`Compilation`: what the pipeline (`kdsl.pipeline`) made of one graph for one target, as data."""

from __future__ import annotations

from dataclasses import dataclass

from kdsl.ir.graph import Graph
from kdsl.ir.program import Entry, Program
from kdsl.passes.fuse import Plan
from kdsl.passes.lower import Lowered
from kdsl.passes.training import Training


@dataclass
class Compilation:
    """Everything the compiler made of one graph for one target."""

    graph: Graph
    target: str
    inference: Lowered
    training: Training | None
    entries: list[Entry]  # `forward`, and `train_step` when training: the programs as the target takes them
    plans: dict[str, Plan]  # each entry's fusion plan, by entry name

    @property
    def param_names(self) -> list[str]:
        return [name for name, _, _ in self.inference.params]

    @property
    def programs(self) -> dict[str, Program]:
        return {entry.name: entry.program for entry in self.entries}
