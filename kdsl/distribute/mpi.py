"""The communicator on MPI, through mpi4py: imported only when the job runs as several processes.

An uncaught exception in one process aborts the whole job (`MPI_Abort`), as `python -m mpi4py` does: the
others would otherwise wait in their next collective for ever. A process killed outright ends the job too: the
launcher (`mpiexec`) stops the others when one exits abnormally.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from kdsl.errors import KdslError

try:
    from mpi4py import MPI
except ImportError as error:  # pragma: no cover - depends on what is installed
    raise KdslError(
        "this job was launched by mpiexec as several processes, but mpi4py is not installed",
        hint="pip install 'kdsl[mpi]'",
    ) from error


# how long a failing process waits, once its traceback is written, before it ends the job: the launcher forwards
# what a process wrote in chunks, and the last of them was lost when the job ended at once
FORWARDING_SECONDS = 0.5


class MpiCommunicator:
    """MPI's world communicator, on host (NumPy) buffers."""

    def __init__(self) -> None:
        self.comm = MPI.COMM_WORLD
        _abort_on_uncaught_exception(self.comm)

    @property
    def rank(self) -> int:
        return self.comm.Get_rank()

    @property
    def size(self) -> int:
        return self.comm.Get_size()

    def allreduce(self, buffer: np.ndarray) -> None:
        self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)

    def start_allreduce(self, buffer: np.ndarray) -> _Request:
        return _Request(self.comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM))

    def broadcast(self, buffer: np.ndarray, root: int = 0) -> None:
        self.comm.Bcast(buffer, root=root)

    def barrier(self) -> None:
        self.comm.Barrier()


class _Request:
    """An all-reduce under way."""

    def __init__(self, request: MPI.Request):
        self.request = request

    def wait(self) -> None:
        self.request.Wait()


def _abort_on_uncaught_exception(comm: MPI.Comm) -> None:
    """Print the traceback, then end every process of the job."""
    if getattr(sys.excepthook, "aborts_mpi", False):
        return
    previous = sys.excepthook

    def hook(kind, value, traceback):
        previous(kind, value, traceback)
        sys.stderr.flush()
        time.sleep(FORWARDING_SECONDS)
        comm.Abort(1)

    hook.aborts_mpi = True
    sys.excepthook = hook
