"""The CUDA target against the NumPy backend and the CPU target, on the models of the CPU-backend test.

Without a GPU these run in Numba's CUDA simulator, which `conftest.py` switches on before
Numba is first imported (`NUMBA_ENABLE_CUDASIM=0 pytest` runs them on a GPU instead). The
simulator runs every CUDA thread as a Python thread, so shapes are tiny and hypothesis
draws few of them; a smaller GIL switch interval lets the simulator's threads hand over
sooner (the suite runs about twice as fast with it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cpu_backend import DENSE, MASKED, _arrays, assert_close

import kdsl
from kdsl.errors import KdslError
from kdsl.lang import load
from kdsl.pipeline import compile_model
from kdsl.runtime import optimizers
from kdsl.runtime.callbacks import Callback

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def small_mnist_lstm() -> str:
    """examples/mnist_lstm.kd with rows of 4 pixels, 3 timesteps and 4 units: the simulator's size."""
    source = (EXAMPLES / "mnist_lstm.kd").read_text()
    return source.replace("units=64", "units=4").replace("f32[batch, 28, 28]", "f32[batch, 3, 4]")


@pytest.fixture(scope="module", autouse=True)
def quick_thread_switches():
    interval = sys.getswitchinterval()
    sys.setswitchinterval(5e-4)
    yield
    sys.setswitchinterval(interval)


def small_gru_stack() -> str:
    """examples/gru_stack.kd (GRU with reset_after, SimpleRNN on its sequence) at the simulator's size."""
    source = (EXAMPLES / "gru_stack.kd").read_text()
    for large, small in [("i32[batch, 50]", "i32[batch, time]"), ("1000, 64", "7, 3"), ("256", "4"), ("128", "3")]:
        source = source.replace(large, small)
    return source


# a cell of one's own: its x-products hoisted before the loop, its loop the state's product and gates
CELL = """
cell MinimalGRU(units) (x, h: f32[batch, units]) -> h {
    f = dense(concatenate(x, h), units, activation=sigmoid)
    h = f * h + (1 - f) * dense(x, units, activation=tanh)
}
model OwnCell(seq: f32[batch, time, 3]) -> y {
    y = rnn(seq, MinimalGRU(4)) |> dense(2, activation=softmax)
}
train OwnCell { loss = sparse_categorical_crossentropy  optimizer = sgd }
"""


@pytest.fixture(scope="module", params=["mnist_lstm", "gru_stack", "masked", "dense", "cell"])
def pair(request):
    sources = {"mnist_lstm": small_mnist_lstm(), "gru_stack": small_gru_stack(), "masked": MASKED, "dense": DENSE,
               "cell": CELL}  # fmt: skip
    source = sources[request.param]
    graph = next(iter(load(source, "t.kd").models.values()))
    reference, compiled = compile_model(graph, target="numpy"), compile_model(graph, target="cuda")
    for i, name in enumerate(reference.param_names):  # non-trivial moving statistics
        if name.endswith("moving_variance"):
            reference.weights[i][...] = np.linspace(0.5, 2.0, reference.weights[i].size)
    compiled.weights = [w.copy() for w in reference.weights]
    return reference, compiled


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.integers(1, 3), steps=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_forward_and_train_step_match_numpy(pair, batch, steps, seed):
    reference, compiled = pair
    inputs, targets = _arrays(reference, np.random.default_rng(seed), batch, steps)
    before = [w.copy() for w in reference.weights]
    compiled.weights = [w.copy() for w in before]
    for expected, actual in zip(reference.forward(*inputs), compiled.forward(*inputs), strict=True):
        assert_close(expected, actual)
    reference.rng, compiled.rng = np.random.default_rng(7), np.random.default_rng(7)  # the same dropout masks
    loss_reference = reference.train_step(inputs, targets)
    loss_compiled = compiled.train_step(inputs, targets)
    assert loss_compiled == pytest.approx(loss_reference, rel=1e-5)
    for expected, actual in zip(reference.grads, compiled.grads, strict=True):
        assert_close(expected, actual)
    for expected, actual in zip(reference.weights, compiled.weights, strict=True):  # moving statistics
        assert_close(expected, actual)
    reference.weights = before  # moving statistics as they were, for the next example


class BatchLosses(Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(logs["loss"])


def test_fit_matches_cpu_target():
    """A few batches of the (shrunk) example's recipe: the same losses and weights on the device as on the CPU."""
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (9, 3, 4)).astype(np.float32), rng.integers(0, 10, 9)
    results = {}
    for target in ("cpu", "cuda"):
        model = kdsl.Model.from_graph(next(iter(load(small_mnist_lstm(), "t.kd").models.values())))
        model.compile(target=target)
        log = BatchLosses()
        model.fit(x, y, batch_size=3, epochs=2, verbose=0, callbacks=[log], shuffle=True)
        results[target] = (log.losses, model.get_weights())
    (cpu_losses, cpu_weights), (cuda_losses, cuda_weights) = results["cpu"], results["cuda"]
    assert cuda_losses == pytest.approx(cpu_losses, rel=1e-5)
    for expected, actual in zip(cpu_weights, cuda_weights, strict=True):
        assert_close(expected, actual)


OPTIMIZERS = [
    ("sgd", {"learning_rate": 0.1}),
    ("sgd", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True, "clipvalue": 0.5}),
    ("adam", {"learning_rate": 0.01, "amsgrad": True, "clipnorm": 1.0}),
    ("rmsprop", {"learning_rate": 0.01, "momentum": 0.5, "centered": True, "global_clipnorm": 1.5}),
    ("adagrad", {"learning_rate": 0.1}),
]


@pytest.mark.parametrize(("name", "arguments"), OPTIMIZERS)
def test_device_optimizer_matches_host(name, arguments):
    """Two steps of each update rule on the device give the host rule's weights and slots."""
    from numba import cuda

    from kdsl.backends.cuda.optimizer import DeviceOptimizer

    rng = np.random.default_rng(1)
    weights = [rng.standard_normal(s).astype(np.float32) for s in [(3, 2), (5,)]]
    grads = [[rng.standard_normal(w.shape).astype(np.float32) for w in weights] for _ in range(2)]
    optimizer, host = optimizers.CLASSES[name](**arguments), optimizers.CLASSES[name](**arguments)
    host_weights = [w.copy() for w in weights]
    device = DeviceOptimizer()
    device_weights = [cuda.to_device(w) for w in weights]
    for step in grads:
        host.apply(host_weights, [g.copy() for g in step])
        device.apply(optimizer, device_weights, [cuda.to_device(g) for g in step])
    for expected, actual in zip(host_weights, device_weights):
        assert_close(expected, actual.copy_to_host())
    device.download(optimizer)
    for expected, actual in zip(host.slots, optimizer.slots):
        for name in expected:
            assert_close(expected[name], actual[name])
    assert optimizer.iterations == host.iterations == 2


def test_devices_lists_cpu_and_cuda():
    found = kdsl.devices()
    assert found[0].kind == "cpu" and "cores" in found[0].detail
    assert any(d.kind in ("cuda", "cuda-simulator") for d in found)


def test_clear_error_without_gpu_or_simulator(monkeypatch):
    from numba import cuda

    monkeypatch.setattr(cuda, "is_available", lambda: False)
    graph = next(iter(load(DENSE, "t.kd").models.values()))
    with pytest.raises(KdslError, match="NVIDIA GPU") as error:
        compile_model(graph, target="cuda")
    assert "NUMBA_ENABLE_CUDASIM=1" in error.value.hint and "kdsl[cuda]" in error.value.hint


def test_optimizer_state_reads_back_for_saving(tmp_path):
    """After device steps, weights and Adam's slots read back as the host rule leaves them; a saved model resumes."""
    graph = next(iter(load(DENSE, "t.kd").models.values()))
    rng = np.random.default_rng(3)
    x, y = rng.standard_normal((2, 3, 4)).astype(np.float32), rng.uniform(0, 1, (2, 3)).astype(np.float32)
    models, initial = {}, None
    for target in ("numpy", "cuda"):
        models[target] = kdsl.Model.from_graph(graph)
        models[target].compile(optimizer=optimizers.Adam(0.01), target=target)
        initial = initial or models[target].get_weights()
        models[target].set_weights(initial)
        for _ in range(2):
            models[target].train_on_batch(x, y)
    for expected, actual in zip(models["numpy"].get_weights(), models["cuda"].get_weights(), strict=True):
        assert_close(expected, actual)
    for expected, actual in zip(models["numpy"].optimizer.slots, models["cuda"].optimizer.slots, strict=True):
        for name in expected:
            assert_close(expected[name], actual[name])
    models["cuda"].save(tmp_path / "m.kdz")
    restored = kdsl.load_model(tmp_path / "m.kdz")
    assert restored.trainer.compiled.target == "cuda"
    assert restored.train_on_batch(x, y) == pytest.approx(models["cuda"].train_on_batch(x, y), rel=1e-5)


def test_explain_gives_launch_configurations(examples, capsys):
    from kdsl.cli import main

    assert main(["compile", str(examples / "mnist_lstm.kd"), "--target", "cuda", "--explain", "--batch", "64"]) == 0
    report = capsys.readouterr().out
    assert "CUDA launches" in report and "<<<16, 256>>>" in report  # batch x 64 units, 256 threads a block
    # a time loop is one kernel, a block per tile of h·U (64 x 256: 16 x 8 tiles of 4 rows by 32 columns)
    assert "one persistent kernel over time (forwards; a cooperative grid of up to <<<128, 256>>>" in report
    assert (
        "2 grid-wide barrier(s) a step), its phases: matmul 64x256 in the kernel: 128 tiles of 4x32, "
        "a block's 8 warps splitting each sum; fused kernel" in report
    )
    assert "(backwards; a cooperative grid of up to <<<32, 256>>> on 132 multiprocessors, 3 grid-wide" in report


def test_later_calls_replay_the_first_on_new_data_and_weights():
    """Calls with the sizes of an earlier one replay its launches: they read the new batch and weights."""
    graph = next(iter(load(small_mnist_lstm(), "t.kd").models.values()))
    reference, compiled = compile_model(graph, target="numpy"), compile_model(graph, target="cuda")
    rng = np.random.default_rng(9)
    for _ in range(3):
        reference.weights = [w + rng.uniform(-0.1, 0.1, w.shape).astype(np.float32) for w in reference.weights]
        compiled.weights = [w.copy() for w in reference.weights]
        inputs, targets = _arrays(reference, rng, 2, 3)
        assert_close(reference.forward(*inputs)[0], compiled.forward(*inputs)[0])
        assert compiled.train_step(inputs, targets) == pytest.approx(reference.train_step(inputs, targets), rel=1e-5)
        for expected, actual in zip(reference.grads, compiled.grads, strict=True):
            assert_close(expected, actual)
    assert [len(compiled.runner.programs[name].replays) for name in ("forward", "train_step")] == [1, 1]


@given(count=st.integers(1, 10**7), tiles=st.integers(0, 10**5), multiprocessors=st.integers(1, 200))
def test_persistent_grid_covers_the_work_on_every_multiprocessor(count, tiles, multiprocessors):
    from kdsl.backends.cuda.launch import THREADS, persistent_grid

    blocks, threads = persistent_grid(count, tiles, multiprocessors, simulator=False)
    assert (blocks - 1) * threads < count <= blocks * threads or (tiles and blocks == tiles >= count / threads)
    if tiles:  # a block per tile, with all its warps to split each sum
        assert threads == THREADS and blocks >= tiles
    else:  # blocks shrink only while some would idle
        assert threads in (64, 128, THREADS) and (threads == 64 or count >= multiprocessors * threads)


@settings(max_examples=12, deadline=None)
@given(
    rows=st.integers(1, 9), columns=st.integers(1, 40), inner=st.integers(1, 24),
    blocks=st.integers(1, 3), threads=st.sampled_from([1, 2, 64]), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_products_in_a_persistent_kernel_match_numpy(rows, columns, inner, blocks, threads, seed):
    """Tiles shared out over blocks, their sums split between a block's threads: by one column (the simulator's
    narrow blocks) or a warp's 32 (a GPU's), with short last tiles of rows and columns."""
    from numba import cuda

    from kdsl.backends.cuda.cell_products import rows_by_matrix

    @cuda.jit
    def product(x, w, y):
        rows_by_matrix(x, w, y)

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, inner)).astype(np.float32)
    w = rng.standard_normal((inner, columns)).astype(np.float32)
    y = np.full((rows, columns), np.nan, np.float32)
    product[blocks, threads](x, w, y)
    assert_close(x.astype(np.float64) @ w, y)


def test_host_loop_matches_persistent_kernel():
    """Time loops run step by step from the host (cells a persistent kernel cannot hold) give the same results."""
    from kdsl.backends.cuda.persistent import Persistent

    graph = next(iter(load(small_mnist_lstm(), "t.kd").models.values()))
    persistent = compile_model(graph, target="cuda")
    stepped = compile_model(graph, target="cuda", persistent=False)
    kinds = {name: {type(s) for s in model.runner.programs["train_step"].schedule.steps}
             for name, model in (("persistent", persistent), ("stepped", stepped))}  # fmt: skip
    assert Persistent in kinds["persistent"] and Persistent not in kinds["stepped"]
    stepped.weights = [w.copy() for w in persistent.weights]
    inputs, targets = _arrays(persistent, np.random.default_rng(5), 3, 3)
    for expected, actual in zip(persistent.forward(*inputs), stepped.forward(*inputs), strict=True):
        assert_close(expected, actual)
    assert stepped.train_step(inputs, targets) == pytest.approx(persistent.train_step(inputs, targets), rel=1e-6)
    for expected, actual in zip(persistent.grads, stepped.grads, strict=True):
        assert_close(expected, actual)


def test_cuda_module_of_an_embedding_model(examples, capsys):
    """The CUDA generator reads embeddings as gathers (the CPU target folds them into `gather_matmul`)."""
    from kdsl.cli import main

    assert main(["compile", str(examples / "text_lstm.kd"), "--target", "cuda", "--emit", "py"]) == 0
    source = capsys.readouterr().out
    assert re.search(r"^def k\d+_embedding\(", source, flags=re.M) and "gather_matmul" not in source


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(["--emit", "ptx"], "--emit ptx shows CUDA kernels"), (["--emit", "ptx", "--target", "cuda"], "simulator")],
)
def test_emit_ptx_refuses_without_a_compiler_for_a_gpu(examples, capsys, arguments, message):
    from kdsl.backends.cuda.launch import simulated
    from kdsl.cli import main

    if message == "simulator" and not simulated():
        pytest.skip("the tests run on a GPU: the simulator is off")
    assert main(["compile", str(examples / "mnist_mlp.kd"), *arguments]) == 1
    assert message in capsys.readouterr().err


PTX_CHECK = """
import sys
from kdsl.cli import main
for path in sys.argv[1:]:
    assert main(["compile", path, "--target", "cuda", "--emit", "ptx", "--cc", "9.0"]) == 0
"""
NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None


@pytest.fixture(scope="module", autouse=True)
def ptx_check(request, tmp_path_factory):
    """Compiles the test models' kernels for a GPU in another process, started before this module's tests.

    It takes about a minute of one core, which the simulator's tests, holding the GIL, leave idle.
    The test models and the GRU stack between them have every kind of kernel the generator writes.
    """
    if not NUMBA_CUDA or not any(item.name == "test_every_kernel_compiles_for_a_gpu" for item in request.session.items):
        yield None
        return
    directory = tmp_path_factory.mktemp("ptx")
    paths = [directory / "masked.kd", directory / "dense.kd", EXAMPLES / "gru_stack.kd"]
    paths[0].write_text(MASKED)
    paths[1].write_text(DENSE)
    environment = {**os.environ, "NUMBA_ENABLE_CUDASIM": "0"}  # the check runs NVVM, which the simulator replaces
    command = [sys.executable, "-c", PTX_CHECK, *map(str, paths)]
    with subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as run:
        yield paths, run
        run.kill()


@pytest.mark.skipif(not NUMBA_CUDA, reason="NVIDIA's numba-cuda is not installed")
def test_every_kernel_compiles_for_a_gpu(ptx_check, capsys):
    """The simulator runs kernels as Python; NVVM must also compile each one for a real GPU (Hopper, sm_90)."""
    from kdsl.cli import main

    paths, run = ptx_check
    kernels = []
    for path in paths:
        assert main(["compile", str(path), "--target", "cuda", "--emit", "py"]) == 0
        kernels += re.findall(r"^def (k\d+\w*)\(", capsys.readouterr().out, flags=re.M)
    out, err = run.communicate(timeout=600)
    assert run.returncode == 0, err[-3000:]
    sections = re.split(r"^// ===== kernel (\w+), sm_90 =====$", out, flags=re.M)[1:]
    compiled = {name for name, ptx in zip(sections[::2], sections[1::2]) if ".visible .entry" in ptx}
    assert set(kernels) <= compiled and {"zero", "gemm_tiled", "adam", "sgd"} <= compiled
