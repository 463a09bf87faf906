"""HOW global descriptor (Tolias et al., ECCV 2020) as a pooler: Table 1, group 1 of the paper.

With the tokens on their (h, w) grid:
    a_n = ||x_n||^2                              (attention: squared norm of the raw token)
    s_n = mean of x over the 3x3 neighbourhood of n, border positions averaging only the
          neighbours that exist (HOW's smoothing, avg_pool with count_include_pad=False)
    v_n = W s_n + b                              (1x1 conv: HOW's learned whitening/reduction)
    u   = l2-normalise( sum_n a_n v_n )
The paper writes the attention as diag(X^T X), the squared norm; HOW's own code uses the norm.
Its scale does not matter because u is l2-normalised. Output D' = `dim` (None keeps D; the
official sketch reduces to 512, which is D for the paper's ResNet-18). The attention returned
is a_n itself, unnormalised.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.models.layers import Dense
from simpool_jax.pooling.common import as_grid


class HOW(nn.Module):
    """Norm-weighted sum of smoothed, whitened tokens: (pooled (B, D'), attention (B, N))."""

    dim: int | None = None
    smoothing: int = 3
    eps: float = 1e-12

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        b, n, d = tokens.shape
        attention = jnp.sum(tokens**2, axis=-1)
        k = self.smoothing
        smooth = nn.avg_pool(as_grid(tokens, grid), (k, k), strides=(1, 1), padding="SAME",
                             count_include_pad=False)
        v = Dense(self.dim or d, name="whiten")(smooth.reshape(b, n, d))
        pooled = jnp.einsum("bn,bnd->bd", attention, v)
        norm = jnp.linalg.norm(pooled, axis=-1, keepdims=True)
        return pooled / jnp.maximum(norm, self.eps), attention
