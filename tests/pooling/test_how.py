"""HOW against float64 numpy: squared-norm weights, 3x3 smoothing over the existing neighbours,
1x1 whitening, l2 normalisation (simpool_jax.pooling.how)."""

import numpy as np
import pytest
from pooler_checks import as_numpy, random_params, rng_for, run


def np_how(x, grid, kernel, bias):
    b, n, d = x.shape
    h, w = grid
    g = x.reshape(b, h, w, d)
    smooth = np.zeros_like(g)
    for i in range(h):
        for j in range(w):
            window = g[:, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
            smooth[:, i, j] = window.mean(axis=(1, 2))
    v = smooth.reshape(b, n, d) @ kernel + bias
    weights = (x**2).sum(-1)
    u = (weights[:, :, None] * v).sum(1)
    return u / np.linalg.norm(u, axis=-1, keepdims=True), weights


@pytest.mark.parametrize("shape,grid,dim", [((1, 6, 4), (2, 3), None), ((3, 20, 6), (4, 5), 3),
                                            ((2, 1, 5), (1, 1), None)])
def test_how_matches_numpy(shape, grid, dim):
    rng = rng_for("how", shape, dim)
    x = rng.standard_normal(shape).astype(np.float32)
    params = random_params("how", {"dim": dim}, shape, grid, rng)
    pooled, attention = run("how", {"dim": dim}, params, x, grid)
    p = as_numpy(params)["whiten"]
    ref, ref_attention = np_how(x.astype(np.float64), grid, p["kernel"], p["bias"])
    assert pooled.shape == (shape[0], dim or shape[2])
    np.testing.assert_allclose(pooled, ref, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(attention, ref_attention, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(pooled, axis=-1), 1.0, rtol=1e-6)
