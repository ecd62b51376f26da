"""LLVM's loop vectorizer, allowed the runtime checks that the kernels' loops need.

A loop over arrays that might overlap vectorizes only behind runtime checks that they do not, and LLVM gives up
past 128 of them. A cell's fused step loop reads and writes a score of arrays (its inputs, weights and states,
and each step's values kept for the backward pass), which can take more: past the bound it ran one element at a
time. The bound is raised for every loop this process compiles (it is a process-wide LLVM setting).

Part of the support package generated modules import: it needs only llvmlite.
"""

from llvmlite import binding as llvm

MEMORY_CHECKS = 1024  # runtime overlap checks the vectorizer may add to one loop

llvm.set_option("", f"-vectorize-memory-check-threshold={MEMORY_CHECKS}")
