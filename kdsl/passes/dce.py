"""Dead-code elimination: drop equations no output needs, and the scan outputs and inputs nobody reads."""

from __future__ import annotations

from kdsl.ir.ops.scan import Scan
from kdsl.ir.program import Program


def dce(program: Program) -> Program:
    """Prune `program` in place (scan bodies included) and return it."""
    live = {id(v) for v in program.outputs}
    kept = []
    for eqn in reversed(program.eqns):
        if not any(id(v) in live for v in eqn.outputs):
            continue
        if isinstance(eqn.op, Scan):
            _prune_scan(eqn, live)
        kept.append(eqn)
        live.update(id(x) for x in eqn.inputs)
    program.eqns = kept[::-1]
    return program


def _prune_scan(eqn, live: set[int]) -> None:
    """Keep the carries, the stacked outputs read outside, and the inputs the pruned body still reads."""
    body, nc, nx = eqn.attrs["body"], eqn.attrs["num_carry"], eqn.attrs["num_xs"]
    keep_out = list(range(nc)) + [i for i in range(nc, len(eqn.outputs)) if id(eqn.outputs[i]) in live]
    body.outputs = [body.outputs[i] for i in keep_out]
    eqn.outputs = tuple(eqn.outputs[i] for i in keep_out)
    dce(body)
    read = {id(x) for e in body.eqns for x in e.inputs} | {id(v) for v in body.outputs}
    keep_in = list(range(nc)) + [i for i in range(nc, len(body.inputs)) if id(body.inputs[i]) in read]
    if nx and not any(nc <= i < nc + nx for i in keep_in):
        keep_in.append(nc)  # a scan needs one sequence to know its length
        keep_in.sort()
    eqn.attrs["num_xs"] = sum(nc <= i < nc + nx for i in keep_in)
    body.inputs = [body.inputs[i] for i in keep_in]
    eqn.inputs = tuple(eqn.inputs[i] for i in keep_in)
