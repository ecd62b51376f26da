"""What kdsl can run on: the CPU, NVIDIA GPUs through Numba's CUDA support, or Numba's CUDA simulator.

`devices()` lists them; `require_cuda()` is the check `target="cuda"` makes first, so a
missing GPU is one clear message rather than an error from deep inside Numba.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from kdsl.backends.cuda.launch import simulated
from kdsl.errors import KdslError

CUDA_HINT = (
    "install an NVIDIA driver and `pip install 'kdsl[cuda]'`, or set NUMBA_ENABLE_CUDASIM=1 before starting "
    "Python to run the CUDA kernels in Numba's simulator (slow: for tests on small shapes)"
)


@dataclass(frozen=True)
class Device:
    kind: str  # "cpu", "cuda" or "cuda-simulator"
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.name} ({self.detail})"


def devices() -> list[Device]:
    """The CPU with its core count, then each CUDA GPU with its memory, or the simulator when it is on."""
    found = [Device("cpu", "CPU", f"{os.cpu_count()} cores")]
    cuda = _numba_cuda()
    if cuda is None:
        return found
    if simulated():
        return [*found, Device("cuda-simulator", "Numba CUDA simulator", "kernels run as Python threads")]
    if not cuda.is_available():
        return found
    for gpu in cuda.gpus:
        with gpu:
            _, total = cuda.current_context().get_memory_info()
            name = gpu.name.decode() if isinstance(gpu.name, bytes) else gpu.name
            found.append(Device("cuda", name, f"{total / 2**30:.1f} GiB, device {gpu.id}"))
    return found


def require_cuda() -> None:
    """Raise a `KdslError` saying what is missing unless CUDA kernels can run (on a GPU or in the simulator)."""
    cuda = _numba_cuda()
    if cuda is None:
        raise KdslError("target 'cuda' needs Numba's CUDA support, which cannot be imported", hint=CUDA_HINT)
    if not cuda.is_available():
        raise KdslError("target 'cuda' needs an NVIDIA GPU with its driver, and none was found", hint=CUDA_HINT)


def _numba_cuda():
    try:
        from numba import cuda
    except ImportError:
        return None
    return cuda
