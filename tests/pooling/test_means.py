"""max, GeM and LSE against float64 numpy written from the formulas (simpool_jax.pooling.means)."""

import numpy as np
import pytest
from pooler_checks import random_params, rng_for, run

SHAPES = [((1, 4, 3), (2, 2)), ((3, 6, 5), (2, 3))]


def _tokens(rng, shape):
    return (rng.standard_normal(shape) * 1.5 + 0.3).astype(np.float32)


@pytest.mark.parametrize("shape,grid", SHAPES)
def test_max(shape, grid):
    x = _tokens(rng_for("max", shape), shape)
    pooled, attention = run("max", {}, {}, x, grid)
    ref = np.array([[max(x[b, n, c] for n in range(shape[1])) for c in range(shape[2])]
                    for b in range(shape[0])])
    np.testing.assert_array_equal(pooled, ref)
    assert attention is None


def np_gem(x, gamma):
    return (np.sum(np.maximum(x, 1e-6) ** gamma, axis=1) / x.shape[1]) ** (1 / gamma)


def np_lse(x, r):
    top = x.max(axis=1)  # exp(r x) overflows for large r without the shift
    return top + np.log(np.mean(np.exp(r * (x - top[:, None])), axis=1)) / r


# name: (its learnable scalar, numpy formula, values of the scalar to test)
LEARNABLE = {"gem": ("gamma", np_gem, (1.0, 2.7)), "lse": ("r", np_lse, (0.5, 40.0))}


@pytest.mark.parametrize("shape,grid", SHAPES)
@pytest.mark.parametrize("name,index", [(n, i) for n in LEARNABLE for i in range(2)])
def test_learnable_means(name, index, shape, grid):
    scalar, formula, values = LEARNABLE[name]
    value = values[index]
    rng = rng_for(name, shape, value)
    x = _tokens(rng, shape)
    params = random_params(name, {}, shape, grid, rng, {scalar: lambda r, s: np.full(s, value)})
    pooled, attention = run(name, {}, params, x, grid)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(pooled, formula(x64, value), rtol=2e-5, atol=2e-5)
    assert attention is None
    if name == "lse":  # r interpolates between the mean (r -> 0) and the max (r -> inf)
        assert np.all(pooled <= x64.max(axis=1) + 1e-5)
        assert np.all(pooled >= x64.mean(axis=1) - 1e-5)
