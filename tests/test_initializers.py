"""Initial weights: the distributions Keras documents, checked statistically on large draws."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdsl.catalogue.args import FnSpec
from kdsl.catalogue.functions import INITIALIZERS
from kdsl.errors import KdslArgumentError
from kdsl.runtime.initializers import initialize


def draw(spec, shape, seed: int = 0) -> np.ndarray:
    return initialize(INITIALIZERS(spec), shape, np.random.default_rng(seed))


@pytest.mark.parametrize("name", sorted(INITIALIZERS.schemas))
def test_every_initializer_gives_float32_of_the_shape_and_repeats_with_its_seed(name):
    shape = (6, 6)
    values = draw(name, shape)
    assert values.dtype == np.float32 and values.shape == shape
    assert np.isfinite(values).all()
    np.testing.assert_array_equal(values, draw(name, shape))


@pytest.mark.parametrize(
    ("name", "fan"),
    [("glorot_uniform", (300 + 100) / 2), ("he_uniform", 300 / 2), ("lecun_uniform", 300)],
)
def test_uniform_scaling_bounds_and_variance(name, fan):
    values = draw(name, (300, 100))
    limit = math.sqrt(3.0 / fan)
    assert np.abs(values).max() <= limit
    assert values.std() == pytest.approx(limit / math.sqrt(3), rel=0.02)


@pytest.mark.parametrize(
    ("name", "variance"),
    [("glorot_normal", 2 / 400), ("he_normal", 2 / 300), ("lecun_normal", 1 / 300)],
)
def test_truncated_normal_scaling_keeps_the_asked_variance(name, variance):
    values = draw(name, (300, 100))
    stddev = math.sqrt(variance) / 0.87962566103423978
    assert np.abs(values).max() <= 2 * stddev + 1e-7
    assert values.std() == pytest.approx(math.sqrt(variance), rel=0.03)


def test_plain_distributions_use_their_arguments():
    normal = draw(FnSpec("random_normal", {"mean": 1.0, "stddev": 0.5}), (400, 100))
    assert normal.mean() == pytest.approx(1.0, abs=0.01) and normal.std() == pytest.approx(0.5, rel=0.02)
    uniform = draw("uniform", (400, 100))
    assert uniform.min() >= -0.05 and uniform.max() <= 0.05
    assert draw("zeros", (3,)).sum() == 0 and draw("ones", (3,)).sum() == 3
    constant = FnSpec("constant", {"value": 2.5})
    np.testing.assert_array_equal(draw(constant, (2, 2)), np.full((2, 2), 2.5, np.float32))


@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (32, 32)])
def test_orthogonal_gives_orthonormal_rows_or_columns(shape):
    w = draw("orthogonal", shape).astype(np.float64)
    gram = w @ w.T if shape[0] <= shape[1] else w.T @ w
    np.testing.assert_allclose(gram, np.eye(min(shape)), atol=1e-5)


@pytest.mark.parametrize("name", INITIALIZERS.names())
def test_every_initializer_gives_c_ordered_float32(name):
    """The kernels take C-ordered arrays; any other layout would be copied at every call."""
    w = draw(name, (6, 4))
    assert w.dtype == np.float32 and w.flags.c_contiguous


def test_identity_and_its_errors():
    np.testing.assert_array_equal(draw("identity", (2, 3)), np.eye(2, 3, dtype=np.float32))
    with pytest.raises(KdslArgumentError, match="matrix"):
        draw("identity", (3,))
    with pytest.raises(KdslArgumentError, match="matrix"):
        draw("orthogonal", (3,))


def test_a_seed_in_the_spec_wins_over_the_generator():
    spec = FnSpec("glorot_uniform", {"seed": 7})
    np.testing.assert_array_equal(draw(spec, (5, 4), seed=1), draw(spec, (5, 4), seed=2))
    assert not np.array_equal(draw("glorot_uniform", (5, 4), seed=1), draw("glorot_uniform", (5, 4), seed=2))


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 40), cols=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_glorot_uniform_stays_within_its_limit_for_any_kernel(rows, cols, seed):
    values = draw("glorot_uniform", (rows, cols), seed)
    assert values.shape == (rows, cols)
    assert np.abs(values).max() <= math.sqrt(6 / (rows + cols)) + 1e-7
