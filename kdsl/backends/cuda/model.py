"""`CudaModel`: a compiled model whose weights, gradients and optimizer slots stay on the device.

A training step uploads its batch (inputs, targets, sample weights, dropout masks) and
brings back the loss and the model outputs (the metrics need them); gradients stay where
the optimizer's device kernels read them. The host lists `weights` and `grads` are copies
made when they are read: weights changed on the host through them (`set_weights`, loading)
are uploaded again before the next kernel runs.

The batch goes into device buffers kept from step to step, by a copy the step waits for; the
next batch is not uploaded on a stream of its own while this step runs. That would pay little
at the batch sizes these models train with: mnist_lstm's batch of 64 is 200 KB, some 10–20 µs
on the bus, against a step of about 40 launches from Python at 15–20 µs each. It is worth
measuring on a GPU once those launches are replayed from a CUDA graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numba import cuda

from kdsl.backends.compiled import CompiledModel, load_module
from kdsl.backends.cuda.codegen import generate_module, prepare
from kdsl.backends.cuda.optimizer import DeviceOptimizer
from kdsl.backends.cuda.runner import DeviceProgram, copy
from kdsl.backends.numpy_ref import bind_sizes
from kdsl.ir.graph import Graph, LossTerm
from kdsl.ir.program import Program
from kdsl.runtime.optimizers import Optimizer


class CudaModel(CompiledModel):
    def __init__(
        self,
        graph: Graph,
        training: bool = True,
        losses: Sequence[LossTerm] | None = None,
        seed: int = 0,
        parallel: bool | None = None,
        persistent: bool = True,
    ):
        """`persistent=False` runs every time loop from the host, a launch per cell kernel and step, with
        cuBLAS for its products: the other side of the trade `benchmarks.cuda` measures."""
        self._host: list[np.ndarray] = []
        self._device: list = []
        self._host_changed = True  # the host copies may differ from the device's: upload before the next kernel
        self._device_changed = False  # the device has weights the host copies do not
        self._grads: list[np.ndarray] = []
        self._device_grads: list = []
        self._grads_downloaded = True
        super().__init__(graph, "cuda", training, losses, seed, parallel)
        text, schedules = generate_module(f"CUDA kernels of model `{graph.name}`.", self.entries(), persistent)
        self.cuda_source = text
        self.kernels = load_module(text)
        self.programs = {name: DeviceProgram(self.kernels, schedule) for name, schedule in schedules.items()}
        self.optimizer_state = DeviceOptimizer()

    def prepare(self, program: Program) -> Program:
        return prepare(program)

    # --- weights and gradients, as host copies ----------------------------------------------------

    @property
    def weights(self) -> list[np.ndarray]:
        if self._device_changed:
            for host, device in zip(self._host, self._device):
                device.copy_to_host(host)
            self._device_changed = False
        self._host_changed = True  # the caller may write into the arrays it gets
        return self._host

    @weights.setter
    def weights(self, value: Sequence[np.ndarray]) -> None:
        self._host = [np.ascontiguousarray(w, np.float32) for w in value]
        self._host_changed, self._device_changed = True, False

    @property
    def grads(self) -> list[np.ndarray]:
        if not self._grads_downloaded:
            self._grads = [g.copy_to_host() for g in self._device_grads]
            self._grads_downloaded = True
        return self._grads

    @grads.setter
    def grads(self, value: Sequence[np.ndarray]) -> None:
        self._grads = list(value)

    def device_weights(self) -> list:
        """The weights on the device, after uploading any change made to the host copies."""
        if self._host_changed:
            if len(self._device) != len(self._host):
                self._device = [cuda.device_array(w.shape, np.float32) for w in self._host]
            for host, device in zip(self._host, self._device):
                device.copy_to_device(host)
            self._host_changed = False
        return self._device

    # --- running ----------------------------------------------------------------------------------

    def forward(self, *inputs: np.ndarray) -> list[np.ndarray]:
        data = self._inputs(inputs)
        outputs = self._run("forward", data, [])
        return [out.copy_to_host() for out in outputs]

    def train_step(
        self,
        inputs: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        sample_weights: Sequence[np.ndarray | None] | None = None,
    ) -> float:
        data, noise = self._step_arrays(inputs, targets, sample_weights)
        results = self._run("train_step", data, noise)
        assert self.training is not None
        loss, outputs, self._device_grads, updates = self._unpack(results)
        self.outputs = [out.copy_to_host() for out in outputs]
        self._grads_downloaded = False
        weights = self.device_weights()
        for (index, _), value in zip(self.training.lowered.updates, updates):
            copy(weights[index], value)  # new BatchNormalization statistics
        self._device_changed = self._device_changed or bool(self.training.lowered.updates)
        return float(loss.copy_to_host().reshape(-1)[0])

    def _run(self, entry: str, data: list[np.ndarray], noise: list[np.ndarray]) -> list:
        program = self.programs[entry]
        weights = self.device_weights()
        sizes = bind_sizes(program.schedule.program.inputs, [*data, *weights, *noise])
        return program([*data, *weights, *noise], sizes)

    def apply_optimizer(self, optimizer: Optimizer) -> None:
        """The optimizer's update as device kernels, on the gradients the last step left on the device."""
        weights = self.device_weights()
        self.optimizer_state.apply(optimizer, [weights[i] for i in self.trainable], self._device_grads)
        self._device_changed = True

    def sync_optimizer(self, optimizer: Optimizer) -> None:
        self.optimizer_state.download(optimizer)

    def source(self, parallel: bool | None = None) -> str:
        """The generated CUDA module (`parallel` is a CPU setting; it is ignored)."""
        return self.cuda_source
