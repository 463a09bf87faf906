"""CBAM pooling against float64 numpy (simpool_jax.pooling.cbam): channel gate from the mean
and max descriptors through one shared bias-free MLP, spatial gate from a zero-padded 7x7 conv
on the channel mean and max of the refined tokens, then the gated mean."""

import numpy as np
import pytest
from pooler_checks import as_numpy, random_params, rng_for, run


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def np_cbam(x, grid, p):
    b, n, d = x.shape
    fc1, fc2 = p["channel_mlp"]["fc1"]["kernel"], p["channel_mlp"]["fc2"]["kernel"]
    mlp = lambda v: np.maximum(v @ fc1, 0) @ fc2  # noqa: E731
    q = sigmoid(mlp(x.mean(1)) + mlp(x.max(1)))
    y = q[:, None] * x
    h, w = grid
    maps = np.stack([y.mean(-1), y.max(-1)], -1).reshape(b, h, w, 2)
    kernel, bias = p["spatial_conv"]["kernel"], p["spatial_conv"]["bias"]
    logits = np.full((b, h, w), bias[0])
    for i in range(h):
        for j in range(w):
            for di in range(-3, 4):
                for dj in range(-3, 4):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        logits[:, i, j] += maps[:, i + di, j + dj] @ kernel[di + 3, dj + 3, :, 0]
    a = sigmoid(logits.reshape(b, n))
    return (a[:, :, None] * y).sum(1) / n, a


@pytest.mark.parametrize("shape,grid", [((1, 6, 32), (2, 3)), ((3, 40, 16), (5, 8)),
                                        ((2, 1, 16), (1, 1))])
def test_cbam_matches_numpy(shape, grid):
    rng = rng_for("cbam", shape)
    x = rng.standard_normal(shape).astype(np.float32)
    params = random_params("cbam", {}, shape, grid, rng)
    pooled, attention = run("cbam", {}, params, x, grid)
    ref, ref_attention = np_cbam(x.astype(np.float64), grid, as_numpy(params))
    np.testing.assert_allclose(attention, ref_attention, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(pooled, ref, atol=1e-6, rtol=1e-5)
