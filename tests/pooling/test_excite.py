"""SE and Gather-Excite pooling against float64 numpy (simpool_jax.pooling.excite)."""

import numpy as np
import pytest
from pooler_checks import as_numpy, random_params, rng_for, run


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def mlp(x, p):
    hidden = np.maximum(x @ p["fc1"]["kernel"] + p["fc1"]["bias"], 0)
    return hidden @ p["fc2"]["kernel"] + p["fc2"]["bias"]


def depthwise_3x3_stride2(g, kernel, bias):
    """Zero-padded 3x3 depthwise conv, stride 2; kernel (3, 3, 1, C) as flax stores it."""
    b, h, w, c = g.shape
    padded = np.zeros((b, h + 2, w + 2, c))
    padded[:, 1:-1, 1:-1] = g
    out = np.zeros((b, (h + 1) // 2, (w + 1) // 2, c))
    for i in range(out.shape[1]):
        for j in range(out.shape[2]):
            for di in range(3):
                for dj in range(3):
                    out[:, i, j] += padded[:, 2 * i + di, 2 * j + dj] * kernel[di, dj, 0]
    return out + bias


@pytest.mark.parametrize("shape", [(1, 5, 32), (4, 9, 20)])
def test_se(shape):
    rng = rng_for("se", shape)
    x = rng.standard_normal(shape).astype(np.float32)
    params = random_params("se", {}, shape, (1, shape[1]), rng)
    pooled, attention = run("se", {}, params, x, (1, shape[1]))
    p = as_numpy(params)["mlp"]
    assert p["fc1"]["kernel"].shape == (shape[2], round(shape[2] / 16))
    u0 = x.astype(np.float64).mean(1)
    np.testing.assert_allclose(pooled, sigmoid(mlp(u0, p)) * u0, atol=1e-6, rtol=1e-5)
    assert attention is None


@pytest.mark.parametrize("shape,grid,extent", [((1, 12, 16), (3, 4), 2), ((3, 35, 32), (5, 7), 2),
                                               ((2, 35, 16), (7, 5), 4), ((1, 1, 16), (1, 1), 2)])
def test_ge(shape, grid, extent):
    rng = rng_for("ge", shape, extent)
    x = rng.standard_normal(shape).astype(np.float32)
    params = random_params("ge", {"extent": extent}, shape, grid, rng)
    pooled, attention = run("ge", {"extent": extent}, params, x, grid)
    p = as_numpy(params)
    g = x.astype(np.float64).reshape(shape[0], *grid, shape[2])
    context = g
    for i in range(int(np.log2(extent))):
        context = np.maximum(context, 0) if i else context
        conv = p[f"gather_{i}"]
        context = depthwise_3x3_stride2(context, conv["kernel"], conv["bias"])
    excited = mlp(context, p["mlp"])
    gate = np.zeros_like(g)
    (h, w), (ch, cw) = grid, context.shape[1:3]
    for i in range(h):
        for j in range(w):  # nearest: source index floor(i * in / out)
            gate[:, i, j] = sigmoid(excited[:, i * ch // h, j * cw // w])
    np.testing.assert_allclose(pooled, (gate * g).mean(axis=(1, 2)), atol=1e-6, rtol=1e-5)
    assert attention is None


def test_ge_extent_must_be_a_power_of_two():
    with pytest.raises(ValueError, match="power of 2"):
        run("ge", {"extent": 3}, {}, np.zeros((1, 4, 16), np.float32), (2, 2))
