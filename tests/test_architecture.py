"""The package's structure: imports go one way between layers and never in a circle; every op has what each part
of the compiler needs of it, and ops know nothing of backends."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from kdsl.backends.cpu.ops import RULES as CPU_RULES
from kdsl.backends.cuda.ops import WRITERS as CUDA_WRITERS
from kdsl.ir.ops import OPS
from kdsl.ir.ops.base import Op
from kdsl.ir.ops.scan import Scan

PACKAGE = Path(__file__).resolve().parent.parent / "kdsl"

# Each module's layer: a module may import from its own layer and the ones below. The runtime's definitions
# of weights, initializers and optimizers sit below the backends that implement them; its training loop,
# callbacks and saving sit above the pipeline that compiles for them, the distribution strategies they use below
# it. The CPU support package imports nothing of kdsl (a standalone module carries a copy), so it sits at the
# bottom.
LAYERS = [
    ["kdsl.errors", "kdsl.files", "kdsl.naming", "kdsl.memory", "kdsl.status_line", "kdsl.backends.cpu.support"],
    ["kdsl.ir", "kdsl.catalogue"],
    ["kdsl.lang", "kdsl.ir.printer", "kdsl.passes", "kdsl.summary", "kdsl.functional"],
    ["kdsl.runtime.state", "kdsl.runtime.initializers", "kdsl.runtime.optimizers", "kdsl.runtime.schedules",
     "kdsl.runtime.update_rules", "kdsl.runtime.update_loops", "kdsl.runtime.metrics", "kdsl.distribute"],
    ["kdsl.backends"],
    ["kdsl.pipeline", "kdsl.explain", "kdsl.footprint", "kdsl.devices", "kdsl.pictures"],
    ["kdsl.runtime", "kdsl.model", "kdsl.model_layers", "kdsl.layers", "kdsl.data", "kdsl.datasets", "kdsl.losses",
     "kdsl.metrics", "kdsl.models", "kdsl.ops", "kdsl.utils", "kdsl.keras_files", "kdsl.curves"],
    ["kdsl.cli", "kdsl"],
]  # fmt: skip


def layer(module: str) -> int:
    """The layer of the longest prefix of `module` that LAYERS names."""
    best = max((p for row in LAYERS for p in row if module == p or module.startswith(p + ".")), key=len)
    return next(i for i, row in enumerate(LAYERS) if best in row)


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """The kdsl modules `path` imports, at any depth (inside functions too), but for type checking only."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for branch in ast.walk(tree)
        if isinstance(branch, ast.If) and "TYPE_CHECKING" in ast.unparse(branch.test)
        for statement in branch.body
        for node in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "kdsl":
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "kdsl")
    return {name for name in found if name in known}


GRAPH = {name: imports(path, set(modules())) - {name} for name, path in modules().items()}


def test_no_module_imports_from_a_layer_above():
    upward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in GRAPH.items()
        for target in targets
        if layer(target) > layer(module) and not module.startswith(target + ".")  # a package's own __init__
    ]
    assert not upward, "\n".join(upward)


def test_no_circles_of_imports():
    circles, done = [], set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            circles.append(" -> ".join([*path[path.index(module) :], module]))
            return
        if module in done:
            return
        for target in sorted(GRAPH[module]):
            if not module.startswith(target + "."):  # a module may import its package's __init__
                visit(target, [*path, module])
        done.add(module)

    for module in sorted(GRAPH):
        visit(module, [])
    assert not circles, "\n".join(circles)


def test_ir_imports_nothing_from_passes_or_backends():
    leaks = [f"{m} imports {t}" for m, ts in GRAPH.items() if m.startswith("kdsl.ir") for t in ts
             if t.startswith(("kdsl.passes", "kdsl.backends"))]  # fmt: skip
    assert not leaks, "\n".join(leaks)


def test_no_dispatch_on_op_names():
    """Passes and backends ask an op's class or flags, never its name."""
    found = [
        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
        for path in PACKAGE.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Compare)
        and any(isinstance(side, ast.Attribute) and side.attr == "name" and ast.unparse(side.value).endswith("op")
                for side in [node.left, *node.comparators])
    ]  # fmt: skip
    assert not found, "compared by name: " + ", ".join(found)


OPS_BY_NAME = sorted(OPS.items())


@pytest.mark.parametrize("name, op", OPS_BY_NAME, ids=[name for name, _ in OPS_BY_NAME])
def test_every_op_has_a_reference_and_a_gradient(name: str, op: Op):
    assert type(op).reference is not Op.reference, f"`{name}` has no NumPy reference"
    assert type(op).infer is not Op.infer, f"`{name}` has no shape rule"
    if op.differentiable and not isinstance(op, Scan):  # a scan's gradient is autodiff's (kdsl.passes.bptt)
        assert type(op).vjp is not Op.vjp, f"`{name}` is differentiable but has no vjp"


@pytest.mark.parametrize("target, rules", [("cpu", CPU_RULES), ("cuda", CUDA_WRITERS)])
@pytest.mark.parametrize("name, op", OPS_BY_NAME, ids=[name for name, _ in OPS_BY_NAME])
def test_every_backend_can_write_every_op(target: str, rules: dict, name: str, op: Op):
    """An elementwise op through its scalar form; any other by a rule in the backend's table (on CUDA, the ops
    the runner carries out itself: products, views and scans; the folded embedding is CPU-only)."""
    if op.elementwise:
        assert type(op).scalar is not Op.scalar, f"`{name}` is elementwise but has no scalar form"
        return
    runner_does = target == "cuda" and (op.product or op.view or isinstance(op, Scan))
    cpu_only = target == "cuda" and name in CPU_ONLY
    assert type(op) in rules or runner_does or cpu_only, f"`{name}` has no {target} rule"


CPU_ONLY = {"gather_matmul", "gather_matmul_grads"}  # made by the CPU target's own stage (kdsl.pipeline.TARGET_STAGES)


def test_the_support_package_stands_alone():
    """Generated modules import kdsl.backends.cpu.support, and a standalone module a copy of it: its modules import
    nothing from kdsl but each other, by relative imports."""
    support = PACKAGE / "backends" / "cpu" / "support"
    absolute = [
        f"{path.name}:{node.lineno}"
        for path in support.glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "kdsl")
        or (isinstance(node, ast.Import) and any(a.name.split(".")[0] == "kdsl" for a in node.names))
    ]
    assert not absolute, "imports from kdsl: " + ", ".join(absolute)
