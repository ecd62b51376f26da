"""`Builder`: how passes write programs. It appends equations and infers their types through each op's shape
rule; `b.tanh(x)`, `b.matmul(x, w, transpose_b=True)` call any registered op by name."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from kdsl.ir.ops import OPS
from kdsl.ir.ops.base import Op
from kdsl.ir.program import Eqn, Program, Var
from kdsl.ir.types import TensorType


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
        return self.emit(OPS["const"], (), value=float(value), dtype=dtype)[0]

    def __getattr__(self, name: str):
        """`b.tanh(x)`, `b.matmul(x, w, transpose_b=True)`: one method per registered op."""
        if name not in OPS:
            raise AttributeError(name)
        op = OPS[name]

        def call(*inputs: Var | float, **attrs: Any) -> Var | list[Var]:
            outputs = self.emit(op, inputs, **attrs)
            return outputs[0] if op.single_output else outputs

        return call

    def program(self, inputs: Sequence[Var], outputs: Sequence[Var]) -> Program:
        return Program(list(inputs), list(outputs), self.eqns)
