"""Write a lowered program as a Python module of Numba kernels.

The module is real source text in a real file: Numba caches compiled functions on disk
only for those, so a second process imports the kernels instead of compiling them. Besides
NumPy and Numba it imports only the support package (`kdsl.backends.cpu.support`: the scalar
helpers, the BLAS binding, products in time loops, the arena's layout and the entry point),
under the name it is given: a standalone module imports a copy of that package beside it.
"""

from __future__ import annotations

import inspect
import re
from types import ModuleType

from numba.core.dispatcher import Dispatcher

from kdsl.backends.compile_status import Kernel
from kdsl.backends.cpu import support
from kdsl.backends.cpu.emitter import Emitter
from kdsl.backends.cpu.ops import RULES
from kdsl.backends.cpu.support import blas, entry, layout, loop_products, replicas, spin
from kdsl.backends.cpu.support.register_tiles import VECTOR_BITS
from kdsl.backends.modules import source_digest
from kdsl.ir.ops.replicas import replica_sum
from kdsl.ir.program import Entry
from kdsl.passes.fuse import Plan

# the support modules whose `__all__` a generated module imports (the scalar helpers it compiles itself)
SUPPORT_MODULES = (blas, entry, layout, loop_products, replicas, spin)

replicas.use_replica_sum(replica_sum)  # the kernels' sums across replicas go to the strategy running the step

# every fast-math flag except "no NaNs / no infinities": a diverging loss must still show as NaN
FASTMATH = "{'nsz', 'arcp', 'contract', 'afn', 'reassoc'}"
# without the GIL, so that the chunks of a batch run on threads at once (`run_chunks`)
DECORATOR = f"@numba.njit(cache=CACHED, nogil=True, error_model='numpy', fastmath={FASTMATH})"

# Numba's disk cache finds a function again through its module's name: a module run from a file without
# registering it (`spec_from_file_location` alone) would leave entries that no later import can load
CACHED_WHEN_NAMED = "CACHED = __name__ in sys.modules  # Numba's disk cache finds these functions again by this name"

# a standalone module finds its support package beside it, however it was loaded
BESIDE = """_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.append(_HERE)  # the support package lies beside this file"""


# a kernel's parameter holding argument i of its entry is `a{i}_{identifier(name)}` (see `generate_kernel`)
ARGUMENT = re.compile(r"a(\d+)_")


def identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)


def module_kernels(module: ModuleType, entry: Entry) -> list[Kernel]:
    """The compiled functions of a generated module that `entry` calls, each labelled with the layers whose
    weights (or dropout masks) it takes, as `layer/weight` names them."""
    kernels = []
    for name, function in vars(module).items():
        if name.startswith(f"_{entry.name}_") and isinstance(function, Dispatcher):
            arguments = [ARGUMENT.match(p) for p in inspect.signature(function.py_func).parameters]
            paths = [entry.argument_names[int(a.group(1))] for a in arguments if a]
            layers = dict.fromkeys(path.split("/")[0] for path in paths if "/" in path)
            kernels.append(Kernel(function, ", ".join(layers)))
    return kernels


def support_imports(package: str, jit: str) -> str:
    """The lines that bring a generated module its support code from `package` (a copy of
    `kdsl.backends.cpu.support`), with the scalar helpers compiled by `jit` (code, such as `numba.njit(...)`)."""
    lines = [f"from {package}.{m.__name__.rsplit('.', 1)[1]} import {', '.join(m.__all__)}" for m in SUPPORT_MODULES]
    return "\n".join([
        *lines,
        f"from {package}.scalars import compiled_helpers",
        "",
        f'SUPPORT = "{source_digest(support)}"  # the support code this module was written against',
        f"TILE_BITS = {VECTOR_BITS}  # the register tiles' width where this text was written: kernels differ by it",
        f"globals().update(compiled_helpers({jit}))  # the scalar helpers its loops call, compiled for this target",
    ])  # fmt: skip


def generate_kernel(entry: Entry, fused: Plan, parallel: bool) -> tuple[str, Emitter]:
    program = entry.program
    em = Emitter(rules=RULES, parallel=parallel, prefix=entry.name)
    names = [f"a{i}_{identifier(n)}" for i, n in enumerate(entry.argument_names)]
    for var, name in zip(program.inputs, names):
        em.bind(var, name)
    em.program(program, fused, top=True)
    results = [em.ref(v) for v in program.outputs]

    carve = []
    for i, buffer in enumerate(em.buffers):
        dims = [em.dim(d) for d in buffer.dims]
        size = " * ".join(f"({d})" if "*" in d else d for d in dims)
        carve.append(f"        arena[offsets[{i}]:offsets[{i}] + {size}].reshape(({', '.join(dims)},)),")
    sizes = [f"    n_{symbol} = sizes[{symbol!r}]" for symbol in sorted(em.symbols)]
    buffers = [f"def _{entry.name}_buffers(arena, offsets, sizes):", *sizes, "    return (", *carve, "    )"]
    # The entry itself is plain Python calling the compiled parts: as a compiled function it would link
    # every part into its own code, and LLVM would optimize and compile all of them once more (a fifth of
    # examples/mnist_lstm.kd's cold compile). Its calls cost a fraction of a microsecond an argument.
    head = [f"def _{entry.name}(buffers, threads, columns, small_product, {', '.join(names)}):"]
    for symbol in sorted(em.symbols):
        arg, axis = next((n, a) for v, n in zip(program.inputs, names) for a, d in enumerate(v.shape) if d == symbol)
        head.append(f"    n_{symbol} = {arg}.shape[{axis}]")
    if em.buffers:
        head.append(f"    {', '.join(b.name for b in em.buffers)}, = buffers")
    body = [*head, *em.lines, f"    return ({', '.join(results)},)"]
    functions = [
        "\n".join([*([] if threaded else [DECORATOR]), f"def {name}({', '.join(args)}):", *lines])
        for name, args, lines, threaded in em.functions
    ]
    return "\n\n\n".join([*functions, "\n".join(buffers), "\n".join(body)]), em


def generate_module(
    title: str, entries: list[Entry], plans: dict[str, Plan], parallel: bool, support_package: str = support.__name__
) -> str:
    """The text of a module defining one function per entry, e.g. `forward(*arrays)` and `train_step(*arrays)`,
    importing its support code from `support_package`."""
    scalar_jit = 'numba.njit(inline="always", fastmath=True, error_model="numpy")'
    parts = [
        f'"""{title}\n\nGenerated by kdsl; needs numpy, numba and the package {support_package}.\n'
        'Each function takes and returns arrays in the order of its ARGUMENTS / RESULTS entry in METADATA."""',
        "import math\nimport os\nimport sys\n\nimport numba\nimport numpy as np",
        *([] if support_package == support.__name__ else [BESIDE]),
        support_imports(support_package, scalar_jit) + "\n" + CACHED_WHEN_NAMED,
    ]
    metadata = {}
    for e in entries:
        kernel, em = generate_kernel(e, plans[e.name], parallel)
        parts.append(kernel)
        arguments = [(n, v.type.dtype, list(v.shape)) for n, v in zip(e.argument_names, e.program.inputs)]
        lifetimes = [(b.first, b.last) for b in em.buffers]
        parts.append(
            f"{e.name} = EntryPoint(_{e.name}, _{e.name}_buffers, {arguments!r}, "
            f"{[list(b.dims) for b in em.buffers]!r}, {lifetimes!r}, plan_layout, parallel={parallel}, "
            f"short_loops={em.short_loops}, column_loops={em.column_loops})"
        )
        metadata[e.name] = {
            "arguments": arguments,
            "results": [(n, v.type.dtype, list(v.shape)) for n, v in zip(e.result_names, e.program.outputs)],
        }
    parts.append(f"METADATA = {metadata!r}")
    return "\n\n\n".join(parts) + "\n"
