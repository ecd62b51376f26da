"""`CompiledModel`: a compilation (see `kdsl.pipeline`) made runnable on a backend, over a model's state.

`forward` runs inference; `train_step` runs forward, loss and backward for one batch and leaves
the gradients in `grads` (in the order of the trainable weights); the runtime's optimizers apply
them. The weights and the dropout generator belong to the `ModelState` the model is given; every
backend draws the same dropout masks from it. Each target runs the programs through a runner:
the IR's interpreter (`numpy`), a generated module of Numba kernels (`cpu`), or CUDA kernels on
a device (`cuda`, see `kdsl.backends.cuda.model`).
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from kdsl.backends.compile_ahead import Ahead, compile_ahead
from kdsl.backends.compile_status import CompileStatus, Kernel
from kdsl.backends.cpu import support
from kdsl.backends.cpu.codegen import generate_module, module_kernels
from kdsl.backends.cpu.policy import splits_by_rows
from kdsl.backends.modules import load_module
from kdsl.errors import KdslArgumentError
from kdsl.files import npz_bytes, write_atomically
from kdsl.ir.interpret import bind_sizes, run_program
from kdsl.ir.types import concrete
from kdsl.passes.compilation import Compilation
from kdsl.runtime.state import ModelState

if TYPE_CHECKING:
    from kdsl.runtime.optimizers import Optimizer


STANDALONE_SUPPORT = "kdsl_cpu_support"  # the support package beside a standalone module


class Runner(Protocol):
    """How one target runs a compilation's entries on arrays (inputs, weights, noise, in the entry's order)."""

    def run(self, entry: str, arrays: list, state: ModelState) -> list:
        """An entry's results: the loss and model outputs as host arrays; gradients and updates as it keeps them."""
        ...

    def grads(self, results: list) -> list[np.ndarray]: ...

    def store_updates(self, state: ModelState, updates: list[tuple[int, object]]) -> None: ...

    def apply_optimizer(self, optimizer: Optimizer, state: ModelState, grads: list) -> None: ...

    def sync_optimizer(self, optimizer: Optimizer) -> None: ...

    def entry_kernels(self, entry: str) -> list[Kernel] | None:
        """The functions a first call of `entry` compiles, for a status line to count: none where nothing
        compiles, None where they are not known."""
        ...

    def warm_optimizer(self, optimizer: Optimizer, state: ModelState) -> None:
        """Compile what a first update by `optimizer` compiles, leaving it and the state as they are."""
        ...

    def compile_ahead(self, entries: dict[str, list[np.ndarray]]) -> Ahead:
        """Start compiling `entries` (each with the arrays of its warm-up call) in another process where that pays;
        the result says which it took."""
        ...

    def source(self, parallel: bool | None) -> str: ...


class HostRunner:
    """Programs that take and return host arrays: the IR's interpreter, or a generated CPU module.

    `parallel` (CPU target): None decides per call, splitting a batch across threads (each runs the
    time loops on its rows) when the model has a time loop and each thread gets enough rows; True
    always splits; False compiles serial kernels and leaves the threads to BLAS.
    """

    def __init__(self, compilation: Compilation, parallel: bool | None = None):
        self.compilation = compilation
        self.parallel = splits_by_rows(compilation.inference.program) if parallel is None else parallel
        self.split = parallel or None  # None: split a batch across threads only when it is large enough
        cpu = compilation.target == "cpu"
        self.module = load_module(cpu_source(compilation, self.parallel, named=False)) if cpu else None

    def run(self, entry: str, arrays: list, state: ModelState) -> list:
        if self.module is not None:
            return list(getattr(self.module, entry)(*arrays, split=self.split))
        return run_program(self.compilation.programs[entry], arrays)

    def grads(self, results: list) -> list[np.ndarray]:
        return results

    def store_updates(self, state: ModelState, updates: list[tuple[int, object]]) -> None:
        for index, value in updates:
            state.host[index][...] = value

    def apply_optimizer(self, optimizer: Optimizer, state: ModelState, grads: list) -> None:
        optimizer.apply([state.host[i] for i in state.trainable], grads)

    def sync_optimizer(self, optimizer: Optimizer) -> None:
        """The optimizer's slots are on the host already."""

    def entry_kernels(self, entry: str) -> list[Kernel]:
        """The generated module's kernels that `entry` calls; none for the IR's interpreter."""
        if self.module is None:
            return []
        return module_kernels(self.module, next(e for e in self.compilation.entries if e.name == entry))

    def warm_optimizer(self, optimizer: Optimizer, state: ModelState) -> None:
        optimizer.warm_up([state.host[i] for i in state.trainable])

    def compile_ahead(self, entries: dict[str, list[np.ndarray]]) -> Ahead:
        if self.module is None:
            return Ahead()
        arguments = {name: [(a.shape, a.dtype.name) for a in arrays] for name, arrays in entries.items()}
        return compile_ahead(self.module, arguments, self.split)

    def source(self, parallel: bool | None = None) -> str:
        """The generated CPU module (`parallel`: threaded kernels; by default as this runner compiles them)."""
        return cpu_source(self.compilation, self.parallel if parallel is None else parallel)


def cpu_source(
    compilation: Compilation,
    parallel: bool | None = None,
    support_package: str = support.__name__,
    named: bool = True,
) -> str:
    """The text of the CPU module of a compilation; `parallel` by default where threads pay (`splits_by_rows`).

    Unless `named`, its text does not name the model: the kernel cache then serves every model of the same
    structure, whatever its name (Keras numbers a process's models: `functional`, `functional_1`...).
    """
    if parallel is None:
        parallel = splits_by_rows(compilation.inference.program)
    title = f"Kernels of model `{compilation.graph.name}`." if named else "Kernels of a model."
    return generate_module(title, compilation.entries, compilation.plans, parallel, support_package)


class CompiledModel:
    """A graph's inference and training programs on one target, running on a model's state."""

    def __init__(self, compilation: Compilation, state: ModelState, runner: Runner):
        self.compilation, self.state, self.runner = compilation, state, runner
        self.graph, self.target = compilation.graph, compilation.target
        self.inference, self.training = compilation.inference, compilation.training
        self.outputs: list[np.ndarray] = []
        self.masks: list[np.ndarray | None] = []
        # one call at a time: a compiled entry computes in buffers it keeps for the next call, so two threads
        # predicting at once would read each other's values
        self._running = threading.Lock()
        self._warm: set[str] = set()  # the entries `warm_up` compiled
        self.output_losses: list[float] = []
        self._grads: list = [np.zeros_like(state.host[i]) for i in state.trainable]

    # --- the state ---------------------------------------------------------------------------------

    @property
    def weights(self) -> list[np.ndarray]:
        return self.state.weights

    @weights.setter
    def weights(self, value: Sequence[np.ndarray]) -> None:
        self.state.weights = value

    @property
    def param_names(self) -> list[str]:
        return self.state.names

    @property
    def trainable(self) -> list[int]:
        return self.state.trainable

    @property
    def rng(self) -> np.random.Generator:
        return self.state.rng

    @rng.setter
    def rng(self, value: np.random.Generator) -> None:
        self.state.rng = value

    @property
    def grads(self) -> list[np.ndarray]:
        """The gradients the last `train_step` left, as host arrays (views of the kernel's buffers on the CPU:
        valid until the next step)."""
        return self.runner.grads(self._grads)

    # --- running ---------------------------------------------------------------------------------

    def forward(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Inference: the model outputs for one batch of inputs (in the graph's input order)."""
        return self.forward_with_masks(*inputs)[0]

    def forward_with_masks(self, *inputs: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """The model outputs for one batch, and each output's padding mask (None where it has none). Stateful
        RNNs keep their final states for the next batch."""
        arrays = [*self._inputs(inputs), *self.state.host]
        with self._running:  # the results copied out of the entry's buffers before another call reuses them
            results = [np.array(x) for x in self.runner.run("forward", arrays, self.state)]
            count, updates = len(self.graph.outputs), self.inference.updates
            carried = results[count : count + len(updates)]
            self.runner.store_updates(self.state, [(i, value) for (i, _), value in zip(updates, carried)])
        return results[:count], self._masks(results[count + len(updates) :])

    def _masks(self, present: list) -> list[np.ndarray | None]:
        """The masks a program returned for the outputs that have one, as one entry per output."""
        given = iter(present)
        return [None if mask is None else next(given) for mask in self.inference.masks]

    def train_step(
        self,
        inputs: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        sample_weights: Sequence[np.ndarray | None] | None = None,
    ) -> float:
        """Loss of one batch; leaves its gradients in `grads`, new BatchNormalization statistics in the weights and
        stateful RNNs' final states in theirs.

        `sample_weights` (one per output, or None for all ones) weigh each sample's loss, as in Keras.
        """
        data, noise = self._step_arrays(inputs, targets, sample_weights)
        with self._running:
            results = self.runner.run("train_step", [*data, *self.state.host, *noise], self.state)
        masked = sum(mask is not None for mask in self.inference.masks)
        counts = len(self.graph.outputs), len(self.state.trainable), len(self.training.lowered.updates), masked
        loss, rest = results[0], iter(results[1:])
        self.outputs, self._grads, updates, masks = ([next(rest) for _ in range(count)] for count in counts)
        self.masks = self._masks(masks)  # each output's mask, as the metrics weigh the outputs by them
        self.output_losses = [float(np.asarray(value).reshape(-1)[0]) for value in rest]  # with several outputs
        self.runner.store_updates(self.state, [(i, u) for (i, _), u in zip(self.training.lowered.updates, updates)])
        return float(np.asarray(loss).reshape(-1)[0])

    def apply_optimizer(self, optimizer: Optimizer) -> None:
        """One step of `optimizer` on the trainable weights, from the gradients the last `train_step` left."""
        self.runner.apply_optimizer(optimizer, self.state, self._grads)

    def sync_optimizer(self, optimizer: Optimizer) -> None:
        """Bring `optimizer`'s slots up to date on the host; a target keeping them on a device copies them back."""
        self.runner.sync_optimizer(optimizer)

    def _step_arrays(
        self,
        inputs: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        sample_weights: Sequence[np.ndarray | None] | None,
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """A training step's arguments but the weights: (inputs, targets, sample weights) and dropout masks."""
        if self.training is None:
            raise RuntimeError("this model was compiled with training=False")
        inputs = self._inputs(inputs)
        targets = [
            np.asarray(t, np.int32 if v.type.dtype == "i32" else np.float32)
            for t, v in zip(targets, self.training.targets, strict=True)
        ]
        sizes = bind_sizes(self.training.lowered.inputs, inputs)
        noise = self.state.dropout_masks(self.training.lowered.noise, sizes)
        batch = inputs[0].shape[0]
        weights = []
        for k, var in enumerate(self.training.sample_weights):
            given = sample_weights[k] if sample_weights is not None else None
            shape = [batch if d == "batch" else t for d, t in zip(var.shape, targets[k].shape)]
            weights.append(np.ones(shape, np.float32) if given is None else np.asarray(given, np.float32))
        return [*inputs, *targets, *weights], noise

    def warm_up(
        self,
        entries: Sequence[str] | None = None,
        optimizer: Optimizer | None = None,
        verbose: bool = False,
        summary: bool = True,
    ) -> None:
        """Compile what the first calls of `entries` (every entry by default) and a first update by `optimizer`
        compile, or load it from the disk cache, so that no first step pays for it.

        Each entry runs once on zeros and the optimizer updates zeros: the model's state and the optimizer stay
        as they were. With `verbose`, a status line on stderr says what compiles while it takes long
        (`CompileStatus`), and, with `summary`, a line says how long it took. Another thread calling an entry
        meanwhile waits for the kernels.
        """
        with self._running:
            entries = [e for e in entries or self.compilation.programs if e not in self._warm]
            if not entries and optimizer is None:
                return
            kernels = {e: self.runner.entry_kernels(e) for e in entries}
            zeros = {e: self._zeros(e) for e in entries if kernels[e] != []}  # none: nothing to compile
            # the entry of the most kernels compiles here, the others in another process meanwhile, where one can
            # (it starts later, being a new process)
            here = max(zeros, key=lambda e: len(kernels[e] or ()), default=None)
            ahead = self.runner.compile_ahead({e: arrays for e, arrays in zeros.items() if e != here})
            with CompileStatus(self.graph.name, verbose, summary) as status:
                for entry in sorted(entries, key=lambda e: e != here):
                    if entry in zeros:
                        if entry in ahead.entries:
                            ahead.wait()
                        status.step(entry, kernels[entry])
                        self.runner.run(entry, zeros[entry], self.state)
                    self._warm.add(entry)
                if optimizer is not None:
                    status.step(f"{optimizer.name} update", None)
                    self.runner.warm_optimizer(optimizer, self.state)

    def _zeros(self, entry: str, batch: int = 2) -> list[np.ndarray]:
        """Zeros for each argument of `entry` (the weights too), `batch` rows of them (one for any other size)."""
        sizes = defaultdict(lambda: 1, batch=batch)
        return [
            np.zeros(concrete(v.shape, sizes), np.int32 if v.type.dtype == "i32" else np.float32)
            for v in self.compilation.programs[entry].inputs
        ]

    def _inputs(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        if len(inputs) != len(self.graph.inputs):
            raise ValueError(f"model `{self.graph.name}` takes {len(self.graph.inputs)} inputs, got {len(inputs)}")
        arrays = [
            np.asarray(x, np.int32 if v.type.dtype == "i32" else np.float32) for x, v in zip(inputs, self.graph.inputs)
        ]
        for array, value in zip(arrays, self.graph.inputs):
            batch = value.type.dims[0]
            if isinstance(batch, int) and array.shape[:1] != (batch,):
                raise KdslArgumentError(
                    f"model `{self.graph.name}` has a fixed batch size of {batch} (input `{value.name}`), as "
                    f"stateful RNNs need: every batch has that many samples, got {array.shape[0] if array.ndim else 0}",
                    hint=f"give batches of exactly {batch} samples: batch_size={batch} in fit, predict and "
                    f"evaluate, with a number of samples that is a multiple of {batch}",
                )
        return arrays

    # --- generated code -----------------------------------------------------------------------------

    def source(self, parallel: bool | None = None) -> str:
        """The generated module: Numba CPU kernels (`parallel`: threaded), or the CUDA kernels."""
        return self.runner.source(parallel)

    def export(self, directory: Path | str, parallel: bool | None = None) -> Path:
        """See `export`."""
        return export(self.compilation, self.state, directory, parallel)


def export(compilation: Compilation, state: ModelState, directory: Path | str, parallel: bool | None = None) -> Path:
    """Write a standalone CPU module `<model>.py`, the support package it imports (a copy of
    `kdsl.backends.cpu.support`), its metadata `<model>.json` and the state's weights (and the states stateful
    RNNs carry) `<model>.npz`."""
    directory = Path(directory)
    (directory / STANDALONE_SUPPORT).mkdir(parents=True, exist_ok=True)
    for file in Path(support.__file__).parent.glob("*.py"):
        write_atomically(directory / STANDALONE_SUPPORT / file.name, file.read_text())
    graph = compilation.graph
    stem = directory / graph.name
    write_atomically(stem.with_suffix(".py"), cpu_source(compilation, parallel, STANDALONE_SUPPORT))

    def described(value) -> dict:
        return {"name": value.name, "dtype": value.type.dtype, "shape": list(value.type.dims)}

    metadata = {
        "model": graph.name,
        "inputs": [described(v) for v in graph.inputs],
        "outputs": [described(v) for v in graph.outputs],
        "params": [
            {"name": n, "shape": list(w.shape), "trainable": i in state.trainable}
            for i, (n, w) in enumerate(zip(state.names, state.weights))
        ],
        "states": [{"name": c.name, "shape": list(c.type.dims)} for c in state.carried],  # stateful RNNs', in the .npz
        "functions": {e.name: {"arguments": e.argument_names, "results": e.result_names} for e in compilation.entries},
    }
    write_atomically(stem.with_suffix(".json"), json.dumps(metadata, indent=2) + "\n")
    carried = dict(zip([c.name for c in state.carried], state.carried_values()))
    write_atomically(stem.with_suffix(".npz"), npz_bytes(dict(zip(state.names, state.weights)) | carried))
    return stem.with_suffix(".py")
