"""Squeeze-Excitation and Gather-Excite (Hu et al., 2018) turned into pooling: Table 1, group 3.

The re-weighting modules gate the features and the gated features are then averaged, which is
how the paper casts them as poolers (V = gate (.) X, uniform attention 1/N):
    SE:  u0 = (1/N) sum_n x_n,   g = sigmoid(MLP(u0)),   u = g (.) u0
    GE:  c  = gather(X): log2(extent) depthwise 3x3 stride-2 convs (ReLU between), on the grid
         g_n = sigmoid(MLP(c))  nearest-upsampled back to the (h, w) grid
         u   = (1/N) sum_n g_n (.) x_n
MLP: 1x1 convs D -> round(D/16) -> D with biases and ReLU (the excite MLP of both papers and of
timm's GatherExcite). GE is the parametric GE-theta+ with extent 2, timm's 'ge' configuration,
whose excite MLP gives the paper's Table 8 cost (+0.5 M on ResNet-50). Its gather convolutions
carry a bias instead of BatchNorm: poolers get no train flag and keep no batch statistics, and
at inference BN is an affine map that a bias (with the conv scale) represents.
Nearest upsampling uses torch's rule, source index floor(i * in / out). Neither gate is a
distribution over tokens (SE's is per channel, GE's per channel and position): no attention.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.models.layers import Dense
from simpool_jax.pooling.common import as_grid


class ExciteMlp(nn.Module):
    """D -> round(D * ratio) -> D with ReLU between: SE / GE's excite MLP, CBAM's channel MLP."""

    ratio: float = 1 / 16
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d = x.shape[-1]
        hidden = max(1, round(d * self.ratio))
        x = nn.relu(Dense(hidden, use_bias=self.use_bias, name="fc1")(x))
        return Dense(d, use_bias=self.use_bias, name="fc2")(x)


class SE(nn.Module):
    """SE gate on the GAP vector. Returns (pooled (B, D), None)."""

    ratio: float = 1 / 16

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, None]:
        u0 = tokens.mean(axis=1)
        return jax.nn.sigmoid(ExciteMlp(self.ratio, name="mlp")(u0)) * u0, None


def upsample_nearest(x: jax.Array, size: tuple[int, int]) -> jax.Array:
    """(B, h', w', C) -> (B, h, w, C), torch's 'nearest': source index floor(i * h' / h)."""
    rows = (jnp.arange(size[0]) * x.shape[1]) // size[0]
    cols = (jnp.arange(size[1]) * x.shape[2]) // size[1]
    return x[:, rows][:, :, cols]


class GE(nn.Module):
    """Gather-Excite (GE-theta+, `extent` a power of 2) gate, then the mean: (pooled, None)."""

    extent: int = 2
    ratio: float = 1 / 16

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, None]:
        num_convs = int(math.log2(self.extent))
        if self.extent < 2 or 2**num_convs != self.extent:
            raise ValueError(f"GE extent must be a power of 2 >= 2, got {self.extent}")
        x = as_grid(tokens, grid)
        d = x.shape[-1]
        context = x
        for i in range(num_convs):
            if i:
                context = nn.relu(context)
            context = nn.Conv(d, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)),
                              feature_group_count=d, name=f"gather_{i}")(context)
        gate = jax.nn.sigmoid(upsample_nearest(ExciteMlp(self.ratio, name="mlp")(context), grid))
        return (gate * x).mean(axis=(1, 2)), None
