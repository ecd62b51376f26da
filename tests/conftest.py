"""Shared fixtures: paths to the shipped examples and to small broken model files.

The CUDA target's tests run in Numba's CUDA simulator unless told otherwise
(`NUMBA_ENABLE_CUDASIM=0` on a machine with a GPU): Numba reads the switch when it is
first imported, so it is set here, before any test module imports kdsl. The CPU target
does not read it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DATA = Path(__file__).resolve().parent / "data"
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


@pytest.fixture
def data() -> Path:
    return DATA
