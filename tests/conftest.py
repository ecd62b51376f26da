"""Shared fixtures: paths to the shipped examples and to small broken model files.

The CUDA target's tests run in Numba's CUDA simulator unless told otherwise
(`NUMBA_ENABLE_CUDASIM=0` on a machine with a GPU): Numba reads the switch when it is
first imported, so it is set here, before any test module imports kdsl. The CPU target
does not read it.

Under CI (`CI` set, as `.ci/run` runs), Hypothesis draws the same examples every run: a numerical
check near its float32 tolerance then passes or fails for good, never by chance; elsewhere it draws
new ones. Either way a failure prints the blob that replays it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
DATA = Path(__file__).resolve().parent / "data"
os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
settings.register_profile("kdsl", print_blob=True)
settings.register_profile("kdsl-ci", derandomize=True, database=None, print_blob=True)
settings.load_profile("kdsl-ci" if os.environ.get("CI") else "kdsl")


@pytest.fixture
def examples() -> Path:
    return EXAMPLES


@pytest.fixture
def data() -> Path:
    return DATA
