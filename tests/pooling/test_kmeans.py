"""k-means pooling against a float64 Lloyd loop (simpool_jax.pooling.kmeans)."""

import numpy as np
import pytest
from pooler_checks import rng_for, run


def np_kmeans(x, k, iterations):
    out = []
    for tokens in x:
        n = len(tokens)
        centroids = tokens[[(2 * j + 1) * n // (2 * k) for j in range(k)]].copy()
        for _ in range(iterations):
            labels = [int(np.argmin([np.sum((t - c) ** 2) for c in centroids])) for t in tokens]
            for j in range(k):
                members = [t for t, label in zip(tokens, labels) if label == j]
                if members:
                    centroids[j] = np.mean(members, axis=0)
        out.append(centroids)
    return np.stack(out)


@pytest.mark.parametrize("shape,k,iterations",
                         [((1, 8, 3), 2, 1), ((3, 20, 4), 3, 3), ((2, 12, 2), 5, 6)])
@pytest.mark.parametrize("mode", ["concat", "max"])
def test_kmeans_matches_numpy(shape, k, iterations, mode):
    kwargs = dict(num_clusters=k, iterations=iterations, readout=mode)
    x = rng_for("kmeans", shape, k).standard_normal(shape).astype(np.float32)
    pooled, attention = run("kmeans", kwargs, {}, x, (1, shape[1]))
    ref = np_kmeans(x.astype(np.float64), k, iterations)
    ref = ref.reshape(shape[0], -1) if mode == "concat" else ref.max(1)
    np.testing.assert_allclose(pooled, ref, atol=1e-6, rtol=1e-6)
    assert attention is None


def test_empty_cluster_keeps_its_centroid():
    """Tokens a, b, c, b: the initial centroids (tokens 1 and 3) tie, ties go to the first, so
    after one round cluster 0 holds all four tokens and the empty cluster 1 stays at b."""
    x = np.array([[[0.0, 0.0], [1.0, 1.0], [5.0, 5.0], [1.0, 1.0]]], np.float32)
    pooled, _ = run("kmeans", {"num_clusters": 2, "iterations": 1}, {}, x, (2, 2))
    np.testing.assert_allclose(pooled, [[1.75, 1.75, 1.0, 1.0]])
    # A second round splits them: {c} and {a, b, b}.
    pooled, _ = run("kmeans", {"num_clusters": 2, "iterations": 2}, {}, x, (2, 2))
    np.testing.assert_allclose(pooled, [[5.0, 5.0, 2 / 3, 2 / 3]], rtol=1e-6)
