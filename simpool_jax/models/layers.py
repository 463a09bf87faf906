"""Building blocks shared by the backbones, pinned to the numerics of the PyTorch originals.

Flax defaults differ from PyTorch in ways that break parity silently: `nn.gelu` is the tanh
approximation, `nn.LayerNorm` uses the fast (E[x^2] - E[x]^2) variance, and `nn.Dense`
initialises with lecun-normal. Everything here follows the PyTorch originals instead.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

# torch.nn.GELU() is the exact erf form; a tanh GELU moves ViT features by ~5e-4.
gelu = functools.partial(jax.nn.gelu, approximate=False)

# timm / DINO / ConvNeXt use LayerNorm(eps=1e-6) and the two-pass variance of PyTorch.
LayerNorm = functools.partial(nn.LayerNorm, epsilon=1e-6, use_fast_variance=False)

# timm's trunc_normal_(std=.02) truncates at +-2 absolute, i.e. +-100 sigma: plain normal.
trunc_normal_02 = nn.initializers.truncated_normal(stddev=0.02, lower=-100.0, upper=100.0)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample, rescales the kept ones.

    Needs the 'dropout' rng when `deterministic` is False and rate > 0.
    """

    rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Linearly increasing stochastic-depth rates over `depth` blocks, as timm/DINO (0 -> rate)."""
    if depth == 1:
        return [0.0]
    return [rate * i / (depth - 1) for i in range(depth)]


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear, the transformer / ConvNeXt MLP (torch names fc1, fc2)."""

    hidden_dim: int
    out_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.hidden_dim, kernel_init=trunc_normal_02, name="fc1")(x)
        x = gelu(x)
        return nn.Dense(self.out_dim, kernel_init=trunc_normal_02, name="fc2")(x)
