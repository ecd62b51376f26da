"""Shared helpers: random arrays for a training program, and central finite differences on the NumPy backend."""

from __future__ import annotations

import numpy as np

from kdsl.ir.interpret import run_program
from kdsl.passes.training import Training


def concrete(dims, batch: int) -> list[int]:
    return [batch if d == "batch" else d for d in dims]


def training_arrays(training: Training, rng: np.random.Generator, batch: int, dtype=np.float64):
    """Inputs, targets (then random sample weights), parameters and dropout masks for one step, floats in `dtype`."""
    lowered = training.lowered
    inputs = []
    for var in lowered.inputs:
        shape = concrete(var.shape, batch)
        if var.type.dtype == "i32":
            ids = rng.integers(1, 6, shape).astype(np.int32)
            if ids.ndim == 2 and ids.shape[1] > 1:  # some right padding, the mask's usual case
                ids[0, -1] = 0
            inputs.append(ids)
        else:
            inputs.append(rng.standard_normal(shape).astype(dtype))
    targets = []
    for var, output in zip(training.targets, lowered.outputs):
        shape = concrete(var.shape, batch)
        if var.type.dtype == "i32":
            targets.append(rng.integers(0, output.shape[-1], shape).astype(np.int32))
        else:
            targets.append(rng.uniform(0.05, 0.95, shape).astype(dtype))
    params = [(rng.standard_normal(spec.shape) * 0.5).astype(dtype) for _, spec, _ in lowered.params]
    for (_, spec, _), value in zip(lowered.params, params):
        if spec.name == "moving_variance":
            value[...] = np.abs(value) + 0.5
    weights = [rng.uniform(0.5, 1.5, concrete(w.shape, batch)).astype(dtype) for w in training.sample_weights]
    noise = []
    for n in lowered.noise:
        keep = rng.uniform(size=concrete(n.var.shape, batch)) >= n.rate
        noise.append((keep / (1 - n.rate)).astype(dtype))
    return inputs, [*targets, *weights], params, noise


def worst_gradient_error(training: Training, rng: np.random.Generator, batch: int, samples: int = 3) -> float:
    """Largest relative gap between autodiff gradients and central differences (float64), over random entries."""
    inputs, targets, params, noise = training_arrays(training, rng, batch)

    def loss(ps):
        return run_program(training.program, [*inputs, *targets, *ps, *noise])[0]

    results = run_program(training.program, [*inputs, *targets, *params, *noise])
    first_grad = 1 + len(training.lowered.outputs)
    worst = 0.0
    for k, index in enumerate(training.trainable):
        grad = results[first_grad + k]
        assert grad.shape == params[index].shape
        for _ in range(samples):
            entry = tuple(int(rng.integers(0, s)) for s in params[index].shape)
            eps = 1e-6
            plus = [p.copy() for p in params]
            plus[index][entry] += eps
            minus = [p.copy() for p in params]
            minus[index][entry] -= eps
            numeric = (loss(plus) - loss(minus)) / (2 * eps)
            worst = max(worst, abs(numeric - grad[entry]) / max(1e-4, abs(numeric) + abs(grad[entry])))
    return worst
