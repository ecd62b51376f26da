"""The few collectives data-parallel training needs, behind one small interface.

`world()` gives the processes this one was launched with: MPI's world when launched by `mpiexec` with several
processes, else a one-process communicator, so that single-process code never imports MPI.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

# how MPI launchers tell each process how many they started: MPICH's and Intel's (PMI), Open MPI's, PMIx's
_LAUNCH_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")


class Communicator(Protocol):
    """Collectives over the processes of one job; every process calls each one, in the same order."""

    @property
    def rank(self) -> int:
        """This process's number, 0 to `size - 1`; 0 is the chief."""

    @property
    def size(self) -> int:
        """How many processes take part."""

    def allreduce(self, buffer: np.ndarray) -> None:
        """Replace `buffer` (contiguous) by its elementwise sum over the processes."""

    def start_allreduce(self, buffer: np.ndarray) -> Pending:
        """Start summing `buffer` in place; the sum is there once the returned request is waited for."""

    def broadcast(self, buffer: np.ndarray, root: int = 0) -> None:
        """Replace `buffer` (contiguous) by `root`'s."""

    def barrier(self) -> None:
        """Return once every process has called it."""


class Pending(Protocol):
    def wait(self) -> None: ...


class _Done:
    def wait(self) -> None:
        """Nothing to wait for."""


class LocalCommunicator:
    """One process alone: every collective leaves the buffer as it is."""

    rank = 0
    size = 1

    def allreduce(self, buffer: np.ndarray) -> None:
        """The sum over one process is the buffer."""

    def start_allreduce(self, buffer: np.ndarray) -> Pending:
        return _Done()

    def broadcast(self, buffer: np.ndarray, root: int = 0) -> None:
        """The root is this process."""

    def barrier(self) -> None:
        """No one to wait for."""


def launched_size() -> int:
    """How many processes the MPI launcher started this one with (1 when not launched by one)."""
    for name in _LAUNCH_SIZES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def world() -> Communicator:
    """The processes of this job: MPI's when launched as several, else this process alone (MPI not imported)."""
    if launched_size() <= 1:
        return LocalCommunicator()
    from kdsl.distribute.mpi import MpiCommunicator

    return MpiCommunicator()
