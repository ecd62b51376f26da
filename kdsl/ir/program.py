"""The lowered IR: programs of primitive ops over typed variables.

Layers lower to `Program`s — flat lists of equations `outputs = op[attrs](inputs)` in
topological order, as in a jaxpr. A `scan` equation holds its cell as a nested
`Program`. Passes write programs through `kdsl.ir.builder.Builder`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdsl.ir.types import TensorType

if TYPE_CHECKING:
    from kdsl.ir.ops.base import Op


@dataclass(eq=False)
class Var:
    """A value of the lowered IR; identity is the object, `name` is for printing and generated code."""

    type: TensorType
    name: str

    @property
    def shape(self) -> tuple:
        return self.type.dims

    @property
    def rank(self) -> int:
        return self.type.rank

    def __repr__(self) -> str:
        return f"{self.name}: {self.type}"


@dataclass(eq=False)
class Eqn:
    op: Op
    inputs: tuple[Var, ...]
    outputs: tuple[Var, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    origin: str | None = None  # the layer this equation came from, for --explain and errors

    @property
    def out(self) -> Var:
        (var,) = self.outputs
        return var


@dataclass(eq=False)
class Program:
    inputs: list[Var]
    outputs: list[Var]
    eqns: list[Eqn]

    def producers(self) -> dict[int, Eqn]:
        return {id(v): eqn for eqn in self.eqns for v in eqn.outputs}

    def uses(self) -> dict[int, list[Eqn]]:
        """For each variable, the equations that read it."""
        users: dict[int, list[Eqn]] = {}
        for eqn in self.eqns:
            for var in eqn.inputs:
                users.setdefault(id(var), []).append(eqn)
        return users


@dataclass
class Entry:
    """A program a backend exposes as a function (`forward`, `train_step`), with its arguments' and results' names."""

    name: str
    program: Program
    argument_names: list[str]
    result_names: list[str]
