"""Each side of the races, kdsl and each reference framework (PyTorch, Keras), in a worker process of its own.

In one process the two sides' thread pools (Numba's, PyTorch's OpenMP, OpenBLAS's) spin on
the cores after each call and slow down whichever side runs next: alternating in one process,
a 0.4 ms kdsl inference took 3.8 ms and a 15 ms PyTorch one 26 ms. Apart, with a short pause
between turns, each side finds the machine idle.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from multiprocessing.connection import Connection

from benchmarks.workloads import REFERENCES, Race


def reference_module(name: str, threads: int):
    """PyTorch or Keras (on TensorFlow), imported and set to `threads` threads."""
    if name == "torch":
        import torch

        torch.set_num_threads(threads)
        return torch
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    import keras

    return keras


def _serve(connection: Connection, side: str, quick: bool, threads: int, only: tuple[str, ...]) -> None:
    modules = {name: reference_module(name, threads) if name == side else None for name in REFERENCES}
    import numba

    numba.set_num_threads(threads)
    from benchmarks.workloads import races

    built = races(modules["torch"], modules["keras"], quick, only)
    runs = [getattr(race, side) is not None for race in built]
    connection.send(([dataclasses.replace(race, kdsl=None, torch=None, keras=None) for race in built], runs))
    while (message := connection.recv()) is not None:
        index, calls = message
        run = getattr(built[index], side)
        run()  # after a pause, the first call wakes threads and refills caches
        started = time.perf_counter()
        for _ in range(calls):
            run()
        connection.send((time.perf_counter() - started) / calls)


class Side:
    """A worker process that builds every race and times its side of one on request.

    `side` is "kdsl", or the reference it runs: "torch" or "keras".
    """

    def __init__(self, side: str, quick: bool, threads: int, only: tuple[str, ...]):
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, side, quick, threads, only), daemon=True)
        self.process.start()
        self.races: list[Race]
        self.runs: list[bool]  # per race, whether this side has it (Keras has no DeepBench races)
        self.races, self.runs = self.connection.recv()

    def time(self, index: int, calls: int = 1) -> float:
        """Seconds per run of race `index`, averaged over `calls` runs after an untimed one."""
        self.connection.send((index, calls))
        return self.connection.recv()

    def close(self) -> None:
        self.connection.send(None)
        self.process.join()
