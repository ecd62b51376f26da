"""Flags that the threads of a kernel set and read without the GIL: atomic loads and stores, x86's
spin-wait hint, and the barrier at which the parts of a time loop split by columns meet.

Part of the support package generated modules import: it needs only Numba and llvmlite.
"""

import os
import platform

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["progress_counters"]  # what generated code names


@intrinsic
def load_acquire(typingctx, flags, index):
    """flags[index], read from memory each time (another thread writes it)."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.load_atomic(builder.gep(array.data, [args[1]]), "acquire", 8)

    return types.int64(flags, index), codegen


@intrinsic
def store_release(typingctx, flags, index, value):
    """flags[index] = value, seen by another thread only after every store this one made before it."""

    def codegen(context, builder, signature, args):
        array = context.make_array(signature.args[0])(context, builder, args[0])
        value = context.cast(builder, args[2], signature.args[2], types.int64)
        builder.store_atomic(value, builder.gep(array.data, [args[1]]), "release", 8)
        return context.get_dummy_value()

    return types.void(flags, index, value), codegen


X86 = platform.machine().lower() in ("x86_64", "amd64")


@intrinsic
def spin_pause(typingctx):
    """x86's spin-wait hint: the core's other hardware thread (maybe the other vCPU) runs meanwhile."""

    def codegen(context, builder, signature, args):
        if X86:
            hint = ir.FunctionType(ir.VoidType(), [])
            builder.call(cgutils.get_or_insert_function(builder.module, hint, "llvm.x86.sse2.pause"), [])
        return context.get_dummy_value()

    return types.void(), codegen


POSIX = os.name == "posix"


@intrinsic
def yield_core(typingctx):
    """Let the system run another thread on this core (POSIX's `sched_yield`): a part waiting for one that the
    system took off its core would otherwise spin through its own time slice before that one runs again."""

    def codegen(context, builder, signature, args):
        if POSIX:
            sched_yield = ir.FunctionType(ir.IntType(32), [])
            builder.call(cgutils.get_or_insert_function(builder.module, sched_yield, "sched_yield"), [])
        return context.get_dummy_value()

    return types.void(), codegen


@numba.njit(cache=True, nogil=True)
def spin_until(flags, index, value, spins):
    """Whether flags[index] became `value` within `spins` reads, without the GIL."""
    for _ in range(spins):
        if load_acquire(flags, index) == value:
            return True
        spin_pause()
    return False


# pause instructions before a part waiting at `meet` yields its core: longer than a step's wait when every
# part has a core of its own, short enough that a part waiting for a preempted one soon lets it run
MEET_SPINS = 1_000

# int64 slots a cache line holds: each part's counter sits on a line of its own, so that one part
# counting does not take the line from the others spinning on theirs
LINE = 8


def progress_counters(parts: int) -> np.ndarray:
    """The counters `meet` reads, one per part, and a last one that says a part has failed."""
    return np.zeros((parts + 1) * LINE, np.int64)


@numba.njit(cache=True, nogil=True)
def meet(progress, part, parts):
    """Wait until every part of a time loop split by columns has come as far as this one.

    Each part counts its own arrivals in `progress` (see `progress_counters`) and spins until the others'
    counts reach its own, yielding its core now and then (a busy machine may have taken another part's).
    A part that failed sets the last counter, and then no one waits: the results are garbage, and the
    failure is raised once every part has returned (see `run_parts`).
    """
    target = progress[part * LINE] + 1
    store_release(progress, part * LINE, target)
    for other in range(parts):
        spins = 0
        while load_acquire(progress, other * LINE) < target:
            if load_acquire(progress, parts * LINE):
                return
            spins += 1
            if spins % MEET_SPINS == 0:
                yield_core()
            else:
                spin_pause()
