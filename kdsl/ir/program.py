"""The lowered IR: programs of primitive ops over typed variables.

Layers lower to `Program`s — flat lists of equations `outputs = op[attrs](inputs)` in
topological order, as in a jaxpr. A `scan` equation holds its cell as a nested
`Program`. A `Builder` appends equations and infers their types through each op's
shape rule, so every pass that writes code (lowering, autodiff, fusion) speaks one API.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
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


class Builder:
    """Appends equations to a program under construction. Python numbers become scalar constants."""

    _ids = itertools.count()

    def __init__(self, origin: str | None = None, eqns: list[Eqn] | None = None):
        """A builder for a new program, or appending to the equations `eqns` of an existing one."""
        self.eqns: list[Eqn] = eqns if eqns is not None else []
        self.origin = origin

    def var(self, type: TensorType, hint: str = "v", exact: bool = False) -> Var:
        """A fresh variable; its name is `hint` plus a unique number, or `hint` itself if `exact`."""
        return Var(type, hint if exact else f"{hint}{next(self._ids)}")

    def emit(self, op: Op, inputs: Sequence[Var | float], **attrs: Any) -> list[Var]:
        inputs = tuple(self.const(x) if isinstance(x, int | float) else x for x in inputs)
        types = op.infer(attrs, *(v.type for v in inputs))
        outputs = tuple(self.var(t) for t in types)
        self.eqns.append(Eqn(op, inputs, outputs, attrs, self.origin))
        return list(outputs)

    def const(self, value: float, dtype: str = "f32") -> Var:
        from kdsl.ir.ops import OPS

        return self.emit(OPS["const"], (), value=float(value), dtype=dtype)[0]

    def __getattr__(self, name: str):
        """`b.tanh(x)`, `b.matmul(x, w, transpose_b=True)`: one method per registered op."""
        from kdsl.ir.ops import OPS

        if name not in OPS:
            raise AttributeError(name)
        op = OPS[name]

        def call(*inputs: Var | float, **attrs: Any) -> Var | list[Var]:
            outputs = self.emit(op, inputs, **attrs)
            return outputs[0] if op.single_output else outputs

        return call

    def program(self, inputs: Sequence[Var], outputs: Sequence[Var]) -> Program:
        return Program(list(inputs), list(outputs), self.eqns)
