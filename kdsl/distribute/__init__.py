"""Data-parallel training on several processes (MPI), with Keras's distribution strategies.

    strategy = kdsl.distribute.MirroredStrategy()
    with strategy.scope():
        model = kdsl.load_model_file("model.kd")
        model.compile(...)
    model.fit(x, y, batch_size=64)   # the global batch

launched as `mpiexec -n 2 python train.py`; without mpiexec the same script runs as one replica.
"""

from kdsl.distribute.communicator import Communicator, LocalCommunicator, world
from kdsl.distribute.strategy import (
    MirroredStrategy,
    MultiWorkerMirroredStrategy,
    Strategy,
    current,
    replica_generator,
)

__all__ = [
    "Communicator",
    "LocalCommunicator",
    "MirroredStrategy",
    "MultiWorkerMirroredStrategy",
    "Strategy",
    "current",
    "replica_generator",
    "world",
]
