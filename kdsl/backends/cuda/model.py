"""`CudaRunner`: how a compiled model runs on a GPU, its weights, gradients and optimizer slots kept there.

A training step uploads its batch (inputs, targets, sample weights, dropout masks) and brings
back the loss and the model outputs (the metrics need them); gradients stay where the
optimizer's device kernels read them. The runner mirrors the model state's weights on the
device: host arrays read through the state are brought up to date first, and weights changed
on the host through them (`set_weights`, loading) are uploaded again before the next kernel runs.

The batch goes into device buffers kept from step to step, by a copy the step waits for; the
next batch is not uploaded on a stream of its own while this step runs, which would pay little
at the batch sizes these models train with next to the launches from Python.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

from kdsl.backends.compile_ahead import Ahead
from kdsl.backends.compile_status import Kernel
from kdsl.backends.cuda.codegen import generate_module
from kdsl.backends.cuda.launch import simulated
from kdsl.backends.cuda.optimizer import DeviceOptimizer
from kdsl.backends.cuda.runner import DeviceProgram, copy
from kdsl.backends.modules import load_module
from kdsl.ir.interpret import bind_sizes
from kdsl.passes.compilation import Compilation
from kdsl.runtime.optimizers import Optimizer
from kdsl.runtime.state import ModelState


class CudaRunner:
    def __init__(self, compilation: Compilation, state: ModelState, persistent: bool = True):
        """`persistent=False` runs every time loop from the host, a launch per cell kernel and step, with
        cuBLAS for its products: the other side of the trade `benchmarks.cuda` measures."""
        self.compilation = compilation
        self.cuda_source, schedules = generate_module(
            "CUDA kernels of a model.",
            compilation.entries,
            compilation.plans,
            persistent,  # cached whatever its name
        )
        self.kernels = load_module(self.cuda_source)
        self.programs = {name: DeviceProgram(self.kernels, schedule) for name, schedule in schedules.items()}
        self.optimizer_state = DeviceOptimizer()
        self.device: list = []
        self.host_changed = True  # the host arrays may differ from the device's: upload before the next kernel
        self.device_changed = False  # the device has weights the host arrays do not
        self.state = state
        state.mirror = self
        self._downloaded: tuple[int, list[np.ndarray]] | None = None  # (id of the device gradients, their copies)

    # --- the state's mirror -------------------------------------------------------------------------

    def pull(self, host: list[np.ndarray]) -> None:
        if self.device_changed:
            for array, device in zip(host, self.device):
                device.copy_to_host(array)
            self.device_changed = False
        self.host_changed = True  # the caller may write into the arrays it gets

    def replaced(self) -> None:
        self.host_changed, self.device_changed = True, False

    def device_weights(self) -> list:
        """The weights on the device, after uploading any change made to the host arrays."""
        host = self.state.host
        if self.host_changed:
            if len(self.device) != len(host):
                self.device = [cuda.device_array(w.shape, np.float32) for w in host]
            for array, device in zip(host, self.device):
                device.copy_to_device(array)
            self.host_changed = False
        return self.device

    # --- running ------------------------------------------------------------------------------------

    def run(self, entry: str, arrays: list, state: ModelState) -> list:
        """Results of `entry`: the loss and model outputs copied to the host, gradients and updates on the device.
        The weights among `arrays` (the state's host arrays) are replaced by their device copies."""
        program = self.programs[entry]
        n_data = len(program.schedule.program.inputs) - len(state.host) - self._noise_count(entry)
        data, noise = arrays[:n_data], arrays[n_data + len(state.host) :]
        inputs = [*data, *self.device_weights(), *noise]
        results = program(inputs, bind_sizes(program.schedule.program.inputs, inputs))
        if entry == "forward":
            return [r.copy_to_host() for r in results]
        outputs = len(self.compilation.graph.outputs)
        shown = 1 + outputs  # the loss and the outputs; and at the end the masks and the outputs' own losses
        masks = len(results) - sum(mask is not None for mask in self.compilation.inference.masks)
        masks -= outputs if outputs > 1 else 0
        host = [r.copy_to_host() for r in results[:shown]], [r.copy_to_host() for r in results[masks:]]
        return [*host[0], *results[shown:masks], *host[1]]

    def _noise_count(self, entry: str) -> int:
        training = self.compilation.training
        return len(training.lowered.noise) if entry == "train_step" and training is not None else 0

    def grads(self, results: list) -> list[np.ndarray]:
        """The gradients as host copies, downloaded once per step."""
        if self._downloaded is None or self._downloaded[0] != id(results):
            self._downloaded = (id(results), [g.copy_to_host() for g in results])
        return self._downloaded[1]

    def store_updates(self, state: ModelState, updates: list[tuple[int, object]]) -> None:
        """New BatchNormalization statistics, copied on the device."""
        weights = self.device_weights()
        for index, value in updates:
            copy(weights[index], value)
        self.device_changed = self.device_changed or bool(updates)

    def apply_optimizer(self, optimizer: Optimizer, state: ModelState, grads: list) -> None:
        """The optimizer's update as device kernels, on the gradients the last step left on the device."""
        weights = self.device_weights()
        self.optimizer_state.apply(optimizer, [weights[i] for i in state.trainable], grads)
        self.device_changed = True

    def sync_optimizer(self, optimizer: Optimizer) -> None:
        self.optimizer_state.download(optimizer)

    def entry_kernels(self, entry: str) -> list[Kernel] | None:
        """Not counted (None); none in Numba's simulator, which compiles nothing."""
        return [] if simulated() else None

    def warm_optimizer(self, optimizer: Optimizer, state: ModelState) -> None:
        """Nothing: the device's update kernels are compiled at the first step."""

    def compile_ahead(self, entries: dict[str, list[np.ndarray]]) -> Ahead:
        """Nothing: the device's kernels compile in this process."""
        return Ahead()

    def source(self, parallel: bool | None = None) -> str:
        """The generated CUDA module (`parallel` is a CPU setting; it is ignored)."""
        return self.cuda_source
