"""How each layer lowers: the rules `kdsl.passes.lower` calls by layer kind, and what a rule sees.

Rules register with `@rule("dense")` in `kdsl.passes.lower_layers` and `kdsl.passes.lower_recurrent`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kdsl.ir.builder import Builder
from kdsl.ir.graph import Layer
from kdsl.ir.program import Var
from kdsl.ir.types import TensorType

if TYPE_CHECKING:
    from kdsl.passes.lower import _Lowering


@dataclass
class LayerContext:
    """What a layer's lowering rule sees: a builder, its parameters and whether it is training."""

    b: Builder
    layer: Layer
    params: dict[str, Var]
    training: bool
    lowering: _Lowering
    carried: list[Var] = field(default_factory=list)  # a stateful layer's carried states not yet taken
    new_mask: Var | None = None  # the output mask, for layers that make their own (embedding, merges)
    mask_set: bool = False  # whether `new_mask` decides (None then means: no mask)

    def set_mask(self, mask: Var | None) -> None:
        self.new_mask, self.mask_set = mask, True

    def param(self, name: str) -> Var | None:
        return self.params.get(name)

    def noise(self, type: TensorType, rate: float, seed: int | None) -> Var:
        return self.lowering.add_noise(type, rate, seed, self.layer.name)

    def update(self, name: str, value: Var) -> None:
        self.lowering.updates.append((self.params[name], value))

    def take_carried(self, count: int) -> list[Var]:
        """The next `count` states a stateful layer carries across batches (its cells' and directions' in turn), or
        none for a layer that carries none."""
        taken, self.carried = self.carried[:count], self.carried[count:]
        return taken

    def carry(self, states: list[Var], final: list[Var]) -> None:
        """The step leaves `final` in the carried `states`, for the next batch to start from."""
        self.lowering.updates += zip(states, final, strict=True)


Rule = Callable[[LayerContext, dict[str, Any], list[Var], list[Var | None], list[TensorType]], list[Var]]
RULES: dict[str, Rule] = {}


def rule(*kinds: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for kind in kinds:
            RULES[kind] = fn
        return fn

    return register


def activate(b: Builder, name: str, x: Var) -> Var:
    """Apply a catalogue activation by name."""
    return x if name == "linear" else getattr(b, name)(x)


def broadcast_to_axis(b: Builder, v: Var, axis: int, rank: int) -> Var:
    """A per-channel vector shaped to broadcast along `axis` of a rank-`rank` tensor."""
    if axis == rank - 1:
        return v
    return b.reshape(v, shape=(v.shape[0], *([1] * (rank - 1 - axis))))


def sum_all(b: Builder, xs: Sequence[Var], op: str) -> Var:
    total = xs[0]
    for x in xs[1:]:
        total = getattr(b, op)(total, x)
    return total
