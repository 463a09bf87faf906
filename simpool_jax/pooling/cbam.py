"""CBAM (Woo et al., ECCV 2018) turned into pooling: Table 1, group 3 of the paper.

    q   = sigmoid(MLP(mean_n x_n) + MLP(max_n x_n))        channel gate, MLP shared, D -> D/16 -> D
    y_n = q (.) x_n                                         channel-refined tokens
    a   = sigmoid(conv7x7([mean_c y, max_c y]))             spatial gate on the (h, w) grid
    u   = (1/N) sum_n a_n y_n
This is the full CBAM (average and max descriptors in both gates). The paper's Table 1 entry is
marked simplified: it keeps only the averages, where mean_c (q (.) x_n) = q . x_n / D is the
"hidden pairwise interaction" between the query q and every token. The MLP has no bias (CBAM
as in timm). The 7x7 conv (2 -> 1 channel, zero padding) has a bias in place of CBAM's
BatchNorm: poolers get no train flag and keep no batch statistics. The attention returned is
the spatial gate a_n in [0, 1], the weight each token gets before the mean.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.pooling.common import as_grid
from simpool_jax.pooling.excite import ExciteMlp


class CBAM(nn.Module):
    """Channel gate, then spatial gate, then the mean. Returns (pooled (B, D), attention (B, N))."""

    ratio: float = 1 / 16
    kernel_size: int = 7

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        mlp = ExciteMlp(self.ratio, use_bias=False, name="channel_mlp")
        channel_gate = jax.nn.sigmoid(mlp(tokens.mean(axis=1)) + mlp(tokens.max(axis=1)))
        y = channel_gate[:, None, :] * tokens
        descriptors = as_grid(jnp.stack([y.mean(axis=-1), y.max(axis=-1)], axis=-1), grid)
        k = self.kernel_size
        conv = nn.Conv(1, (k, k), padding=((k // 2, k // 2),) * 2, name="spatial_conv")
        spatial = conv(descriptors)
        attention = jax.nn.sigmoid(spatial.reshape(tokens.shape[:2]))
        return jnp.einsum("bn,bnd->bd", attention, y) / tokens.shape[1], attention
