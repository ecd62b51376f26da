"""Each side of the races, kdsl and PyTorch, in a worker process of its own.

In one process the two sides' thread pools (Numba's, PyTorch's OpenMP, OpenBLAS's) spin on
the cores after each call and slow down whichever side runs next: alternating in one process,
a 0.4 ms kdsl inference took 3.8 ms and a 15 ms PyTorch one 26 ms. Apart, with a short pause
between turns, each side finds the machine idle.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
from multiprocessing.connection import Connection

from benchmarks.workloads import Race


def _serve(connection: Connection, torch_side: bool, quick: bool, threads: int, only: tuple[str, ...]) -> None:
    torch = None
    if torch_side:
        import torch

        torch.set_num_threads(threads)
    import numba

    numba.set_num_threads(threads)
    from benchmarks.workloads import races

    built = races(torch, quick, only)
    connection.send([dataclasses.replace(race, kdsl=None, torch=None) for race in built])
    while (message := connection.recv()) is not None:
        index, calls = message
        run = built[index].torch if torch_side else built[index].kdsl
        run()  # after a pause, the first call wakes threads and refills caches
        started = time.perf_counter()
        for _ in range(calls):
            run()
        connection.send((time.perf_counter() - started) / calls)


class Side:
    """A worker process that builds every race and times its side of one on request."""

    def __init__(self, torch_side: bool, quick: bool, threads: int, only: tuple[str, ...]):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, torch_side, quick, threads, only), daemon=True)
        self.process.start()
        self.races: list[Race] = self.connection.recv()

    def time(self, index: int, calls: int = 1) -> float:
        """Seconds per run of race `index`, averaged over `calls` runs after an untimed one."""
        self.connection.send((index, calls))
        return self.connection.recv()

    def close(self) -> None:
        self.connection.send(None)
        self.process.join()
