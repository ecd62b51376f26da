"""What the compiler did with a model, in words: fused kernels, per layer, with their cost.

`format_fused` prints a lowered program kernel by kernel (`kdsl compile --emit ir`);
`explain` summarizes each layer: its kernels, what was fused with what, FLOPs and bytes
per step, and why a faster variant was not used (`kdsl compile --explain`); for the CUDA
target, each kernel's launch configuration too.
"""

from __future__ import annotations

from collections import defaultdict

from kdsl.backends.cpu.policy import prepares_weights, splits_columns
from kdsl.backends.cpu.support.entry import MIN_ROWS_PER_THREAD_PREPARED
from kdsl.backends.cpu.support.loop_products import TILE_ROWS, product_limit
from kdsl.backends.cpu.support.register_tiles import MAX_TILE_ROWS, PANEL, VECTOR_BITS
from kdsl.ir.graph import Graph, Layer
from kdsl.ir.ops.linalg import GatherMatMul, GatherMatMulGrads, MatMul
from kdsl.ir.ops.scan import Scan
from kdsl.ir.program import Eqn, Program
from kdsl.ir.types import numel
from kdsl.passes.compilation import Compilation
from kdsl.passes.fuse import Kernel, Plan


def format_fused(program: Program, fused: Plan, indent: str = "") -> str:
    """The program as its kernels: each fused loop with its ops, values kept in registers marked `~`."""
    lines = [f"{indent}in  {', '.join(map(repr, program.inputs))}"]
    for kernel in fused.kernels:
        origin = f"  # {kernel.origin}" if kernel.origin else ""
        if kernel.kind == "loop":
            shape = ", ".join(map(str, kernel.shape))
            lines.append(f"{indent}loop over ({shape}):{origin}")
            for eqn in kernel.eqns:
                mark = "~" if id(eqn.out) in fused.registers else " "
                args = ", ".join(v.name for v in eqn.inputs)
                lines.append(f"{indent}  {mark} {eqn.out.name} = {eqn.op.name}({args})")
            continue
        eqn = kernel.eqns[0]
        outs = ", ".join(map(repr, eqn.outputs))
        args = ", ".join(v.name for v in eqn.inputs)
        attrs = ", ".join(f"{k}={v}" for k, v in eqn.attrs.items() if k != "body")
        note = "  (no code: a view)" if kernel.kind == "view" else ""
        lines.append(f"{indent}{outs} = {eqn.op.name}[{attrs}]({args}){note}{origin}".replace("[]", ""))
        if isinstance(eqn.op, Scan):
            lines.append(format_fused(eqn.attrs["body"], fused.body(eqn), indent + "    "))
    lines.append(f"{indent}out {', '.join(v.name for v in program.outputs)}")
    return "\n".join(lines)


def kernels_cost(kernels: list[Kernel], fused: Plan, sizes: dict[str, int]) -> tuple[int, int]:
    """(FLOPs, bytes written to memory) of kernels of the plan `fused`, scan bodies counted once per step."""
    flops = written = 0
    for kernel in kernels:
        for eqn in kernel.eqns:
            if isinstance(eqn.op, Scan):
                steps = numel(eqn.inputs[eqn.attrs["num_carry"]].shape[:1], sizes)
                cell = fused.body(eqn)
                body_flops, body_bytes = kernels_cost(cell.kernels, cell, sizes)
                flops += steps * body_flops
                written += steps * body_bytes
                continue
            if kernel.kind == "view":
                continue
            out = numel(eqn.outputs[0].shape, sizes)
            flops += eqn.op.flops(eqn, sizes) or (out if eqn.op.elementwise else 0)
        if kernel.kind != "view":
            written += 4 * sum(numel(e.outputs[0].shape, sizes) for e in kernel.eqns if not isinstance(e.op, Scan))
    return flops, written


def _describe(kernel: Kernel, fused: Plan, sizes: dict[str, int], target: str = "cpu") -> str:
    if target == "cuda":
        return _describe_cuda(kernel, fused, sizes)
    eqn = kernel.eqns[0]
    if kernel.kind == "loop":
        ops = ", ".join(e.op.name for e in kernel.eqns)
        return f"fused loop over ({', '.join(map(str, kernel.shape))}): {ops}"
    if isinstance(eqn.op, Scan):
        body = fused.body(eqn)
        parts = [_step_product(k.eqns[0], eqn) or _describe(k, body, sizes) for k in body.kernels if k.kind != "view"]
        direction = "backwards" if eqn.attrs["reverse"] else "forwards"
        split = (
            f" (with fewer than {MIN_ROWS_PER_THREAD_PREPARED} rows a thread, each thread runs it on every row and "
            "computes its share of each step's product columns)"
            if splits_columns(eqn)
            else ""
        )
        return f"one compiled time loop ({direction}){split}; per step: " + "; ".join(parts)
    if eqn.op.product:
        return f"{eqn.op.name} through BLAS -> {eqn.out.type}"
    if isinstance(eqn.op, GatherMatMul):
        table = eqn.inputs[0].shape[0]
        picked = "picked by the time loop at each step" if eqn.attrs.get("in_loop") else "picked"
        return (
            f"embedding rows and their projection, folded -> {eqn.out.type}: with more than {table} ids, "
            f"the table's product through BLAS, its rows {picked}; else the product of the rows"
        )
    if isinstance(eqn.op, GatherMatMulGrads):
        table = eqn.inputs[0].shape[0]
        return (
            f"gradients of the folded embedding and projection -> {eqn.outputs[0].type}, {eqn.outputs[1].type}: "
            f"with more than {table} ids, the output gradient summed by id, then two table-sized products "
            f"through BLAS, else the products of the rows"
        )
    return f"{eqn.op.name} -> {', '.join(str(v.type) for v in eqn.outputs)}"


def _step_product(eqn: Eqn, scan: Eqn) -> str | None:
    """How a time loop's step multiplies by a weight that `kdsl.backends.cpu.support.loop_products` prepares; None
    otherwise."""
    body, nc, nx = scan.attrs["body"], scan.attrs["num_carry"], scan.attrs["num_xs"]
    weights = {id(v) for v in body.inputs[nc + nx :]}
    if not isinstance(eqn.op, MatMul) or id(eqn.inputs[1]) not in weights:
        return None
    if not prepares_weights(scan):
        return f"matmul through BLAS (a loop this short does not pay for preparing the weight) -> {eqn.out.type}"
    tiles = f"packed in {PANEL}-column panels, in {VECTOR_BITS}-bit register tiles of up to {MAX_TILE_ROWS} rows"
    if product_limit(TILE_ROWS + 1):
        tiles = f"in column blocks through BLAS's unpacked kernel (on up to {TILE_ROWS} rows: {tiles})"
    return f"matmul by the weight prepared before the loop, {tiles} -> {eqn.out.type}"


def _describe_cuda(kernel: Kernel, fused: Plan, sizes: dict[str, int]) -> str:
    """What the CUDA target launches for `kernel`, with its grid (blocks x threads) at these sizes."""
    from kdsl.backends.cuda.launch import GEMM_TILE, MULTIPROCESSORS, element_grid, gemm_grid, persistent_grid
    from kdsl.backends.cuda.ops import write
    from kdsl.backends.cuda.persistent import persistent_scan
    from kdsl.backends.cuda.writer import KernelWriter

    eqn = kernel.eqns[0]
    if isinstance(eqn.op, Scan):
        body = fused.body(eqn)
        parts = [_describe_cuda(k, body, sizes) for k in body.kernels if k.kind != "view"]
        direction = "backwards" if eqn.attrs["reverse"] else "forwards"
        found = persistent_scan("explain", eqn, body)
        if found is None:
            return f"host loop over time ({direction}), launching per step: " + "; ".join(parts)
        blocks, threads = persistent_grid(*found[1].work(sizes), simulator=False)
        phases = [
            _cuda_product(k.eqns[0], sizes, threads) if k.kind == "op" and k.eqns[0].op.product
            else part.split(" <<<")[0]
            for k, part in zip([k for k in body.kernels if k.kind != "view"], parts)
        ]  # fmt: skip
        return (
            f"one persistent kernel over time ({direction}; a cooperative grid of up to <<<{blocks}, {threads}>>> "
            f"on {MULTIPROCESSORS} multiprocessors, "
            f"{found[0].count('grid.sync()')} grid-wide barrier(s) a step), its phases: " + "; ".join(phases)
        )
    if eqn.op.product:
        rows, columns = numel(eqn.out.shape[:-1], sizes), numel(eqn.out.shape[-1:], sizes)
        blocks, (tile, _) = gemm_grid(rows, columns, GEMM_TILE, simulator=False)
        return f"{eqn.op.name} {rows}x{columns}: cuBLAS through CuPy, else tiled kernel <<<{blocks}, {tile}x{tile}>>>"
    if kernel.kind == "loop":
        space = kernel.shape
        what = f"fused kernel over ({', '.join(map(str, space))}): " + ", ".join(e.op.name for e in kernel.eqns)
    else:
        writer = KernelWriter("explain")
        write(writer, eqn)
        space = writer.space
        what = f"{eqn.op.name} kernel, a thread per element of ({', '.join(map(str, space))})"
    blocks, threads = element_grid(numel(space, sizes), simulator=False)
    return f"{what} <<<{blocks}, {threads}>>>"


def _cuda_product(eqn, sizes: dict[str, int], threads: int) -> str:
    """A product inside a persistent kernel: its tiles, or a thread per element."""
    from kdsl.backends.cuda.launch import ROWS, WARP, product_tiles

    rows, columns = (numel((d,), sizes) for d in eqn.out.shape)
    if not isinstance(eqn.op, MatMul):
        return f"{eqn.op.name} {rows}x{columns} in the kernel, a thread per element"
    return (
        f"matmul {rows}x{columns} in the kernel: {product_tiles(rows, columns)} tiles of {ROWS}x{WARP}, "
        f"a block's {threads // WARP} warps splitting each sum"
    )


def _not_chosen(layer: Layer) -> list[str]:
    """Why this layer's kernels are not the fastest kdsl has."""
    config = layer.config["layer"].config if "layer" in layer.config else layer.config
    reasons = []
    if config.get("recurrent_dropout", 0) > 0:
        reasons.append("recurrent_dropout > 0: each step multiplies h by a mask before h·U (one more pass per step)")
    if config.get("reset_after") is False:
        reasons.append("reset_after=false: r·h is needed before the second product with U, so two GEMMs per step")
    fast = {"tanh", "sigmoid", "linear", "relu"}
    for key in ("activation", "recurrent_activation"):
        if key in config and "units" in config and layer.kind.name != "dense" and config[key] not in fast:
            reasons.append(f"{key}={config[key]}: computed with libm calls, not the rational tanh/sigmoid")
    return reasons


def explain(compilation: Compilation, batch: int = 32) -> str:
    """A per-layer report of a compilation's programs (forward, and train_step) at `batch` samples.

    For the CUDA target, each kernel's launch is written `<<<blocks, threads per block>>>`, as on a GPU.
    """
    graph, target = compilation.graph, compilation.target
    sizes = cost_sizes(graph, batch)
    lines = [f"model {graph.name}, costs at batch size {batch}" + (", CUDA launches" if target == "cuda" else "")]
    for name in compilation.programs:
        fused = compilation.plans[name]
        by_layer: dict[str | None, list[Kernel]] = defaultdict(list)
        for kernel in fused.kernels:
            by_layer[kernel.origin].append(kernel)
        lines.append(f"\n{name}:")
        for layer in graph.layers():
            kernels = [k for k in by_layer.get(layer.name, []) if k.kind != "view"]
            if not kernels:
                continue
            flops, written = kernels_cost(kernels, fused, sizes)
            lines.append(
                f"  {layer.name} ({layer.kind.keras}): {len(kernels)} kernel(s), "
                f"{human(flops)}FLOP, {human(written)}B written"
            )
            lines += [f"    - {_describe(k, fused, sizes, target)}" for k in kernels]
            if name == "forward":
                lines += [f"    not the fastest variant: {reason}" for reason in _not_chosen(layer)]
        rest = [k for k in by_layer.get(None, []) if k.kind != "view"]
        if rest:
            flops, written = kernels_cost(rest, fused, sizes)
            lines.append(f"  loss and totals: {len(rest)} kernel(s), {human(flops)}FLOP, {human(written)}B written")
    return "\n".join(lines)


def cost_sizes(graph: Graph, batch: int) -> dict[str, int]:
    """The sizes costs are given at: `batch` samples, and 1 for every other variable size (a sequence's steps)."""
    sizes = {"batch": batch}
    for value in graph.inputs:
        for d in value.type.dims:
            if isinstance(d, str) and d not in sizes:
                sizes[d] = 1
    return sizes


def listed_kernels(compilation: Compilation, program: str) -> list[Kernel]:
    """The kernels of `program` that `--explain` lists: those that make code, of a layer of the model or of none
    (the loss and the totals)."""
    layers = {layer.name for layer in compilation.graph.layers()}
    kernels = compilation.plans[program].kernels
    return [k for k in kernels if k.kind != "view" and (k.origin is None or k.origin in layers)]


def human(n: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} T"


def program_flops(program: Program, fused: Plan, sizes: dict[str, int]) -> int:
    """Floating-point operations of one run of `program` (planned as `fused`) at `sizes` (e.g. {"batch": 64}),
    time loops unrolled."""
    return kernels_cost(fused.kernels, fused, sizes)[0]
