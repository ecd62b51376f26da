"""A picture of the kernels the compiler generates for a model: what `kdsl compile --explain` lists, drawn.

Each program (`forward`, and `train_step` when training) is a cluster with one box per kernel `--explain` lists, in
the order they run, coloured by kind, labelled with the layers it came from, its FLOPs and the bytes it writes (at
one batch size); an edge goes from the kernel that writes a value to each kernel that reads it, through the views
that make no code.
"""

from __future__ import annotations

from kdsl.explain import cost_sizes, human, kernels_cost, listed_kernels
from kdsl.ir.ops.linalg import GatherMatMul, GatherMatMulGrads
from kdsl.ir.ops.scan import Scan
from kdsl.passes.compilation import Compilation
from kdsl.passes.fuse import Kernel, Plan
from kdsl.pictures.dot import Dot, Html, html_text

COLOURS = {"fused loop": "#cfe2f3", "product": "#fce5cd", "time loop": "#d9ead3", "op": "#eeeeee"}
MAX_OPS = 6  # the ops a box names before it says how many more


def kernels_to_dot(compilation: Compilation, batch: int = 32, rankdir: str = "TB", dpi: int = 200) -> Dot:
    """The DOT graph of every program's kernels, with costs at `batch` samples."""
    graph = compilation.graph
    sizes = cost_sizes(graph, batch)
    dot = Dot(f"{graph.name} kernels", {"rankdir": rankdir, "dpi": dpi, "fontname": "Helvetica", "label": _legend()})
    dot.node_defaults = {"shape": "plaintext", "fontname": "Helvetica"}
    for name in compilation.programs:
        fused = compilation.plans[name]
        cluster = dot.cluster(name, label=f"{name} (costs at batch size {batch})", style="dashed", labeljust="l")
        boxes = {id(kernel): f"{name}:{i}" for i, kernel in enumerate(listed_kernels(compilation, name))}
        writers: dict[int, set[str]] = {}  # each value: the boxes that wrote what it holds
        for kernel in fused.kernels:
            read = set().union(*(writers.get(id(x), set()) for e in kernel.eqns for x in e.inputs))
            box = boxes.get(id(kernel))
            if box is not None:
                cluster.node(box, label=_label(kernel, fused, sizes))
                for source in sorted(read - {box}):
                    cluster.edge(source, box)
            for eqn in kernel.eqns:  # a view, or a kernel not listed, passes on what it read
                writers.update((id(out), {box} if box is not None else read) for out in eqn.outputs)
    return dot


def _kind(kernel: Kernel) -> str:
    """The kind of a kernel the picture colours: a fused loop, a product, a time loop or another op."""
    eqn = kernel.eqns[0]
    if kernel.kind == "loop":
        return "fused loop"
    if isinstance(eqn.op, Scan):
        return "time loop"
    return "product" if eqn.op.product or isinstance(eqn.op, (GatherMatMul, GatherMatMulGrads)) else "op"


def _label(kernel: Kernel, fused: Plan, sizes: dict[str, int]) -> Html:
    kind = _kind(kernel)
    origins = list(dict.fromkeys(e.origin for e in kernel.eqns if e.origin))
    layers = "from " + ", ".join(f"<i>{html_text(o)}</i>" for o in origins) if origins else "the loss and totals"
    flops, written = kernels_cost([kernel], fused, sizes)
    rows = [
        (f"<b>{html_text(_title(kernel, kind))}</b>", COLOURS[kind]),
        (html_text(_contents(kernel, fused)), "white"),
        (layers, "white"),
        (f"{human(flops)}FLOP, {human(written)}B written", "white"),
    ]
    cells = "".join(f'<tr><td bgcolor="{colour}" align="left">{text}</td></tr>' for text, colour in rows if text)
    return Html(f'<table border="0" cellborder="1" cellspacing="0" cellpadding="6">{cells}</table>')


def _legend() -> Html:
    """The colour of each kind of kernel, under the picture."""
    cells = "".join(f'<td bgcolor="{colour}">{kind}</td>' for kind, colour in COLOURS.items())
    return Html(f'<table border="0" cellborder="1" cellspacing="4" cellpadding="4"><tr>{cells}</tr></table>')


def _title(kernel: Kernel, kind: str) -> str:
    eqn = kernel.eqns[0]
    if kind == "fused loop":
        return f"fused loop over ({', '.join(map(str, kernel.shape))})"
    if kind == "time loop":
        return f"time loop ({'backwards' if eqn.attrs['reverse'] else 'forwards'})"
    return f"{eqn.op.name} -> {', '.join(str(v.type) for v in eqn.outputs)}"


def _contents(kernel: Kernel, fused: Plan) -> str:
    """What the kernel computes, in short: a loop's ops, a time loop's kernels per step."""
    if kernel.kind == "loop":
        return _some([e.op.name for e in kernel.eqns])
    eqn = kernel.eqns[0]
    if isinstance(eqn.op, Scan):
        body = fused.body(eqn)
        steps = [f"loop ({len(k.eqns)} ops)" if k.kind == "loop" else k.eqns[0].op.name for k in body.kernels]
        return "per step: " + _some([s for s, k in zip(steps, body.kernels) if k.kind != "view"])
    return ""


def _some(names: list[str]) -> str:
    shown = ", ".join(names[:MAX_OPS])
    return shown + (f", and {len(names) - MAX_OPS} more" if len(names) > MAX_OPS else "")
