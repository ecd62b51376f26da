"""Learning-rate schedules, as `keras.optimizers.schedules`: pass one as an optimizer's `learning_rate`.

A schedule maps the optimizer's step count (0 for the first update) to a learning rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


class LearningRateSchedule:
    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def config(self) -> dict:
        return {"name": type(self).__name__, **vars(self)}


class ExponentialDecay(LearningRateSchedule):
    """initial · decay_rate^(step / decay_steps), the exponent floored when `staircase`."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float, staircase: bool = False):
        self.initial_learning_rate, self.decay_steps = initial_learning_rate, decay_steps
        self.decay_rate, self.staircase = decay_rate, staircase

    def __call__(self, step: int) -> float:
        exponent = step / self.decay_steps
        return self.initial_learning_rate * self.decay_rate ** (math.floor(exponent) if self.staircase else exponent)


class PiecewiseConstantDecay(LearningRateSchedule):
    """values[i] while step <= boundaries[i] (and the last value after the last boundary)."""

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]):
        if len(values) != len(boundaries) + 1:
            raise ValueError("PiecewiseConstantDecay needs one more value than boundaries")
        self.boundaries, self.values = list(boundaries), list(values)

    def __call__(self, step: int) -> float:
        return next((v for b, v in zip(self.boundaries, self.values) if step <= b), self.values[-1])


class CosineDecay(LearningRateSchedule):
    """From initial down to initial · alpha along half a cosine over `decay_steps`, then constant."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0):
        self.initial_learning_rate, self.decay_steps, self.alpha = initial_learning_rate, decay_steps, alpha

    def __call__(self, step: int) -> float:
        progress = min(step, self.decay_steps) / self.decay_steps
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.initial_learning_rate * ((1 - self.alpha) * cosine + self.alpha)


SCHEDULES = {cls.__name__: cls for cls in (ExponentialDecay, PiecewiseConstantDecay, CosineDecay)}
