"""k-means pooling: Table 1, group 2 of the paper (Q = U, K = X, s = -||x - u||^2, hard argmax).

    U0  = k tokens at the evenly spaced indices floor((2j + 1) N / 2k), j = 0..k-1
    repeat `iterations` times:
        c_n = argmin_j ||x_n - u_j||^2          (ties: lowest j)
        u_j = mean of the x_n with c_n = j      (an empty cluster keeps its centroid)
    output the k centroids through `readout` ('concat': D' = k*D; 'max': D' = D)
The paper initialises at random. A fixed spread of token positions plays that role without an
rng, so the pooler is deterministic at inference, as features for k-NN must be. No parameters;
gradients flow through the centroid means (the assignment is piecewise constant). No single
attention map: the assignment (B, k, N), row-normalised, is sown as intermediates['assignment'].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.pooling.common import check_iterative, readout


def lloyd_step(tokens: jax.Array, centroids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One assignment + update round. Returns (new centroids (B, k, D), assignment (B, k, N)
    with each cluster's row summing to 1, or 0 for an empty cluster)."""
    k = centroids.shape[1]
    distances = jnp.sum((tokens[:, :, None] - centroids[:, None]) ** 2, axis=-1)
    assign = jax.nn.one_hot(jnp.argmin(distances, axis=-1), k, dtype=tokens.dtype)
    counts = assign.sum(axis=1)
    weights = jnp.swapaxes(assign / jnp.maximum(counts, 1)[:, None, :], 1, 2)
    means = jnp.einsum("bkn,bnd->bkd", weights, tokens)
    return jnp.where(counts[..., None] > 0, means, centroids), weights


class KMeans(nn.Module):
    """Hard k-means on the tokens of each image. Returns (pooled (B, k*D) or (B, D), None)."""

    num_clusters: int = 3
    iterations: int = 3
    readout: str = "concat"

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, None]:
        check_iterative("k-means pooling", self.iterations, self.readout)
        n = tokens.shape[1]
        k = self.num_clusters
        centroids, weights = lloyd_step(tokens, tokens[:, (2 * jnp.arange(k) + 1) * n // (2 * k)])
        centroids, weights = jax.lax.fori_loop(
            1, self.iterations, lambda _, carry: lloyd_step(tokens, carry[0]), (centroids, weights))
        self.sow("intermediates", "assignment", weights)
        return readout(centroids, self.readout), None
