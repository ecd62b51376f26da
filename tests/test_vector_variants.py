"""The register tiles in each vector width (`kdsl.backends.cpu.support.register_tiles`), forced with
KDSL_VECTOR_BITS in a process of their own (the width is fixed when the support package is imported).

Each width must multiply like NumPy on every count of rows and panels the tiles have cases for, and
give the NumPy backend's results in time loops split by rows and by columns, forward and in a training
step. The 512-bit tiles run on any CPU (LLVM splits vectors wider than the CPU's); on one without
AVX-512 they are slow but still right.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHECK = """
import numpy as np
from kdsl.backends.cpu import policy
from kdsl.backends.cpu.support.loop_products import pack_panels, panel_product
from kdsl.backends.cpu.support.register_tiles import MAX_TILE_ROWS, PANEL, VECTOR_BITS
from kdsl.lang import load
from kdsl.pipeline import compile_model


def close(expected, actual, rtol=1e-5):
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-6)
    error = float(np.abs(expected - actual).max(initial=0.0))
    assert error <= rtol * scale + 1e-6, (error, scale)


rng = np.random.default_rng(0)
for rows in range(1, 2 * MAX_TILE_ROWS + 2):
    for k, n in [(1, PANEL), (7, 3 * PANEL + 5), (33, 12 * PANEL + 1)]:
        for transposed in (False, True):
            a = rng.standard_normal((rows, k)).astype(np.float32)
            w = rng.standard_normal((n, k) if transposed else (k, n)).astype(np.float32)
            panels = pack_panels(w, transposed)
            out = np.full((rows, n), np.nan, np.float32)
            panel_product(a, panels, np.empty((rows, PANEL), np.float32), out, 0, panels.shape[0])
            close(a.astype(np.float64) @ (w.T if transposed else w).astype(np.float64), out)

TEXT = '''
model Tiles(ids: i32[batch, time]) -> y {
    y = embedding(ids, 50, 8) |> gru(20, return_sequences=true) |> lstm(12) |> dense(3, activation=softmax)
}
train Tiles { loss = sparse_categorical_crossentropy }
'''
graph = load(TEXT, "tiles.kd").models["Tiles"]
policy.MIN_SPLIT_WEIGHT = 0  # every loop at a small batch splits by columns
compiled, reference = compile_model(graph, target="cpu"), compile_model(graph, target="numpy")
compiled.weights = [w.copy() for w in reference.weights]
for batch in (1, 3, 17, 40):  # columns, columns, rows of 8 and 9, rows of 20: tiles of 1 to 6 rows
    ids = rng.integers(0, 50, (batch, 20)).astype(np.int32)
    labels = rng.integers(0, 3, batch).astype(np.int32)
    close(reference.forward(ids)[0], compiled.forward(ids)[0])
    assert abs(reference.train_step([ids], [labels]) - compiled.train_step([ids], [labels])) < 1e-5
    for expected, actual in zip(reference.grads, compiled.grads, strict=True):
        close(expected, actual)
source = open(compiled.runner.module.__file__).read()
print(VECTOR_BITS, f"TILE_BITS = {VECTOR_BITS}" in source)
"""


def run_with(bits: str, code: str = CHECK) -> subprocess.CompletedProcess:
    env = {**os.environ, "KDSL_VECTOR_BITS": bits}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("bits", ["256", "512"])
def test_each_vector_width_multiplies_like_numpy(bits):
    done = run_with(bits)
    assert done.returncode == 0, done.stderr[-3000:]
    # the width in force, and written into the generated module, whose cached kernels are then its own
    assert done.stdout.split() == [bits, "True"]


def test_a_width_other_than_256_or_512_is_refused():
    done = run_with("384", "import kdsl.backends.cpu.support")
    assert done.returncode != 0
    assert "KDSL_VECTOR_BITS must be 256 or 512, got '384'" in done.stderr
