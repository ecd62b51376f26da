"""The compiler, stage by stage: a model's graph to the programs and plans a backend generates code from.

    lower            each layer call becomes primitive ops (`kdsl.passes.lower`)
    tidy             transposes that cancel, time loops of one step inlined, what a loop's step computes from
                     its inputs alone computed for every step before the loop (`kdsl.passes.hoist`), dead code
                     removed
    losses, backprop the training program: losses, regularizers, the gradient of every weight,
                     backpropagation through time for scans (`kdsl.passes.training`), dead code removed
    cse              repeated work merged
    target           what one target needs more: the CPU folds embeddings into the products that read them
    plan             fusion: kernels, registers, in-place pieces (`kdsl.passes.fuse`), once per program

`compile_programs` runs them and returns a `Compilation`, which `--explain`, `--emit`, the CLI and
both code generators read; `compile_model` makes one runnable on a backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from kdsl.ir.graph import Graph, LossTerm
from kdsl.ir.program import Entry, Program
from kdsl.passes.compilation import Compilation
from kdsl.passes.dce import dce
from kdsl.passes.fold import fold_gather_projections
from kdsl.passes.fuse import cse, plan
from kdsl.passes.hoist import hoist_step_independent
from kdsl.passes.lower import Lowered, lower
from kdsl.passes.single_steps import inline_single_steps
from kdsl.passes.training import Training, add_training, losses_per_output
from kdsl.passes.transposes import cancel_transposes
from kdsl.runtime.state import ModelState

if TYPE_CHECKING:  # Numba loads with the backends: checking a model needs neither
    from kdsl.backends.compiled import CompiledModel

TARGETS = ("numpy", "cpu", "cuda")

# what each target does to a program after the target-independent stages
TARGET_STAGES: dict[str, Callable[[Program], Program]] = {
    "numpy": lambda program: program,
    "cpu": fold_gather_projections,  # picks its order of work when it runs; the CUDA target has no kernel for it
    "cuda": lambda program: program,
}


def tidy(lowered: Lowered) -> Lowered:
    """Transposes that cancel removed, one-step time loops inlined, step-independent work hoisted out of the others,
    dead code removed."""
    program = hoist_step_independent(inline_single_steps(cancel_transposes(lowered.program)))
    return lowered.rewritten(dce(program))


def compile_programs(
    graph: Graph, target: str = "cpu", training: bool = True, losses: Sequence[LossTerm] | None = None
) -> Compilation:
    """Every stage, in order, for `graph` on `target`; `losses` (one per output) default to the train block's."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    inference = tidy(lower(graph, training=False))
    trained = None
    if training:
        trained = add_training(tidy(lower(graph, training=True)), graph, losses or losses_per_output(graph))
        trained = replace(trained, program=dce(trained.program))
    entries = _entries(graph, inference, trained)
    for entry in entries:
        entry.program = TARGET_STAGES[target](cse(entry.program))
    return Compilation(graph, target, inference, trained, entries, {e.name: plan(e.program) for e in entries})


def _entries(graph: Graph, inference: Lowered, training: Training | None) -> list[Entry]:
    """The functions a backend exposes, with the names of their arguments and results."""
    data = [v.name for v in graph.inputs]
    params = [name for name, _, _ in inference.params] + [state.name for state, _ in inference.carried]
    masks = [f"mask/{name}" for name, mask in zip(graph.output_names, inference.masks) if mask is not None]
    carried = [f"update/{params[i]}" for i, _ in inference.updates]  # a stateful RNN's states, after inference too
    entries = [Entry("forward", inference.program, [*data, *params], [*graph.output_names, *carried, *masks])]
    if training is not None:
        noise = [f"{n.layer}/keep{i}" for i, n in enumerate(training.lowered.noise)]
        targets = [v.name for v in [*training.targets, *training.sample_weights]]
        results = ["loss", *graph.output_names, *(f"grad/{params[i]}" for i in training.trainable)]
        results += [*(f"update/{params[i]}" for i, _ in training.lowered.updates), *masks]
        results += [f"loss/{name}" for name in graph.output_names] if len(graph.outputs) > 1 else []
        arguments = [*data, *targets, *params, *noise]
        entries.append(Entry("train_step", training.program, arguments, results))
    return entries


def new_state(compilation: Compilation, seed: int = 0) -> ModelState:
    """A state for a compiled graph: weights drawn by each layer's initializer from `seed`."""
    return ModelState.initial(compilation.graph, seed)


def compile_model(
    graph: Graph,
    target: str = "cpu",
    training: bool = True,
    losses: Sequence[LossTerm] | None = None,
    seed: int = 0,
    state: ModelState | None = None,
    **options,
) -> CompiledModel:
    """`graph` compiled for `target` and made runnable, with `state`'s weights (by default, new ones drawn from
    `seed` by each layer's initializers). `options` go to the target's runner: `parallel` on the CPU (see
    `HostRunner`), `persistent` on CUDA (see `CudaRunner`).
    """
    if target == "cuda":
        from kdsl.devices import require_cuda

        require_cuda()  # before importing the CUDA backend, which needs Numba's CUDA support
    from kdsl.backends.compiled import CompiledModel, HostRunner, Runner

    compilation = compile_programs(graph, target, training, losses)
    if state is None:
        state = new_state(compilation, seed)
    elif state.names != compilation.param_names:
        raise ValueError(f"the state's weights {state.names} are not the model's {compilation.param_names}")
    else:  # the model's weights, as trainable as its layers are now
        state.trainable = [i for i, (_, spec, _) in enumerate(compilation.inference.params) if spec.trainable]
    runner: Runner
    if target == "cuda":
        from kdsl.backends.cuda.model import CudaRunner

        runner = CudaRunner(compilation, state, **options)
    else:
        runner = HostRunner(compilation, **options)
    return CompiledModel(compilation, state, runner)
