"""Optimizer updates on the device: Keras 3's rules (`kdsl.runtime.update_rules`), one kernel per parameter.

The host `Optimizer` (`kdsl.runtime.optimizers`) stays the source of the hyperparameters,
the step count and the learning-rate schedule; its slots (momentum, Adam's moments, ...)
live on the device between steps and are copied back only when asked for (`download`),
so a training step moves no weights, gradients or slots across the bus. Every kernel does
the float32 operations of the host rule in the same order, so both give the same weights
up to rounding. Gradient clipping follows the host too: `clipvalue` inside the kernel,
`clipnorm` and `global_clipnorm` by factors computed from sums of squares on the device.
"""

from __future__ import annotations

import math

import numpy as np
from numba import cuda

import kdsl
from kdsl.backends.cpu.support.cache_keys import key_by_package
from kdsl.backends.cuda.launch import THREADS, element_grid
from kdsl.backends.cuda.runner import zero
from kdsl.runtime import update_rules as rules
from kdsl.runtime.optimizers import Optimizer

key_by_package(kdsl.__file__)


@cuda.jit(device=True, inline=True)
def _clipped(g, clip, limit, scale, global_scale):
    """A gradient element as the host's `Optimizer.clip` leaves it."""
    if clip:
        g = min(max(g, -limit), limit)
    return g * scale * global_scale


@cuda.jit(cache=True)
def sum_squares(g, clip, limit, out, slot):
    """out[slot] += the sum of the clipped gradient's squares: each thread sums its elements, a block its threads'
    sums, and one atomic add a block (an atomic add an element would queue a million of them on one address)."""
    total = np.float32(0.0)
    for i in range(cuda.grid(1), g.size, cuda.gridsize(1)):
        value = _clipped(g[i], clip, limit, np.float32(1.0), np.float32(1.0))
        total += value * value
    sums = cuda.shared.array(THREADS, np.float32)
    t = cuda.threadIdx.x
    sums[t] = total
    cuda.syncthreads()
    half = cuda.blockDim.x // 2  # blocks of a power of two threads (`element_grid`)
    while half > 0:
        if t < half:
            sums[t] += sums[t + half]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        cuda.atomic.add(out, slot, sums[0])


_sgd_at, _adam_at, _rmsprop_at, _adagrad_at = (
    cuda.jit(device=True, inline=True)(rule) for rule in (rules.sgd, rules.adam, rules.rmsprop, rules.adagrad)
)


@cuda.jit(cache=True)
def _sgd(w, g, m, clip, limit, scale, global_scale, lr, momentum, nesterov):
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        _sgd_at(i, w, _clipped(g[i], clip, limit, scale, global_scale), m, lr, momentum, nesterov)


@cuda.jit(cache=True)
def _adam(w, g, m, v, v_hat, clip, limit, scale, global_scale, alpha, one_minus_b1, one_minus_b2, epsilon, amsgrad):
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        grad = _clipped(g[i], clip, limit, scale, global_scale)
        _adam_at(i, w, grad, m, v, v_hat, alpha, one_minus_b1, one_minus_b2, epsilon, amsgrad)


@cuda.jit(cache=True)
def _rmsprop(w, g, velocity, momentum_slot, average, clip, limit, scale, global_scale, lr, rho, one_minus_rho,
             epsilon, momentum, centered):  # fmt: skip
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        grad = _clipped(g[i], clip, limit, scale, global_scale)
        _rmsprop_at(i, w, grad, velocity, momentum_slot, average, lr, rho, one_minus_rho, epsilon, momentum, centered)


@cuda.jit(cache=True)
def _adagrad(w, g, accumulator, clip, limit, scale, global_scale, lr, epsilon):
    for i in range(cuda.grid(1), w.size, cuda.gridsize(1)):
        _adagrad_at(i, w, _clipped(g[i], clip, limit, scale, global_scale), accumulator, lr, epsilon)


KERNELS = {"sgd": _sgd, "adam": _adam, "rmsprop": _rmsprop, "adagrad": _adagrad}
f32 = np.float32


class DeviceOptimizer:
    """Applies a host `Optimizer`'s rule to device weights; keeps its slots on the device."""

    def __init__(self) -> None:
        self.slots: list[dict[str, object]] = []
        self._source: list | None = None  # the host slot list last uploaded or downloaded
        self._on_host = True  # whether the host slots are the copy to trust (the caller may have changed them)
        self._squares = None  # each gradient's sum of squares, for clipping by norm

    def apply(self, optimizer: Optimizer, weights: list, grads: list) -> None:
        """One step of `optimizer` on device `weights` from device `grads` (arrays of the weights' shapes)."""
        if not optimizer.slots:
            optimizer.slots = [optimizer.create_slots(np.zeros(w.shape, np.float32)) for w in weights]
        if optimizer.slots is not self._source or self._on_host:
            self.slots = [{k: cuda.to_device(v.reshape(-1)) for k, v in s.items()} for s in optimizer.slots]
            self._source = optimizer.slots
        weights, grads = [w.reshape(w.size) for w in weights], [g.reshape(g.size) for g in grads]
        scales, global_scale = self._clip_scales(optimizer, grads)
        if optimizer.schedule is not None:
            optimizer.learning_rate = float(optimizer.schedule(optimizer.iterations))
        optimizer.iterations += 1
        lr = f32(optimizer.learning_rate)
        clip = (np.bool_(optimizer.clipvalue is not None), f32(optimizer.clipvalue or 0.0))
        for w, g, slots, scale in zip(weights, grads, self.slots, scales, strict=True):
            grid = element_grid(w.size)
            common = (*clip, f32(scale), f32(global_scale))
            self._update(optimizer, grid, w, g, slots, common, lr)
        self._on_host = False

    def _update(self, optimizer: Optimizer, grid, w, g, slots, common, lr) -> None:
        """The optimizer's rule as its kernel: the same slots and scalars the host loop takes."""
        if optimizer.name not in KERNELS:
            raise NotImplementedError(f"optimizer `{optimizer.name}` has no device update")
        arrays = [slots.get(name, w) for name in optimizer.slot_names]  # the weight stands for a slot not kept
        KERNELS[optimizer.name][grid](w, g, *arrays, *common, *optimizer.scalars(lr))

    def _clip_scales(self, optimizer: Optimizer, grads: list) -> tuple[list[float], float]:
        """The factors `clipnorm` and `global_clipnorm` multiply each gradient by (1.0 when unset)."""
        scales = [1.0] * len(grads)
        if optimizer.clipnorm is None and optimizer.global_clipnorm is None:
            return scales, 1.0
        clip = (np.bool_(optimizer.clipvalue is not None), f32(optimizer.clipvalue or 0.0))
        if self._squares is None or self._squares.size != len(grads):
            self._squares = cuda.device_array(len(grads), np.float32)
        zero[element_grid(len(grads))](self._squares)
        for slot, g in enumerate(grads):
            sum_squares[element_grid(g.size)](g, *clip, self._squares, slot)
        squares = [float(s) for s in self._squares.copy_to_host()]  # one copy, one wait for the device, a step
        if optimizer.clipnorm is not None:
            scales = [min(1.0, optimizer.clipnorm / max(math.sqrt(s), 1e-12)) for s in squares]
        if optimizer.global_clipnorm is None:
            return scales, 1.0
        total = math.sqrt(sum(s * float(f32(scale)) ** 2 for s, scale in zip(squares, scales)))
        return scales, min(1.0, optimizer.global_clipnorm / max(total, 1e-12))

    def download(self, optimizer: Optimizer) -> None:
        """Copy the device slots into the host optimizer's, which the caller may then read or replace."""
        if not self._on_host and optimizer.slots is self._source:
            for host, device in zip(optimizer.slots, self.slots):
                for name, value in device.items():
                    host[name][...] = value.copy_to_host().reshape(host[name].shape)
        self._on_host = True
