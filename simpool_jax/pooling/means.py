"""Group 1 of the paper's Table 1: global max, GeM and LSE, generalised means over the N tokens.

For tokens x_n in R^D (n = 1..N), channelwise:
    max:  u = max_n x_n
    GeM:  u = ( (1/N) sum_n max(x_n, eps)^gamma )^(1/gamma),  gamma learnable (Radenovic et al.):
          the mean is inside the power and the tokens are clamped at eps so that x^gamma is
          defined for any gamma (the official repo's 'gem' is LPPool: a sum and no clamp).
    LSE:  u = (1/r) log( (1/N) sum_n exp(r x_n) ),  r learnable; r -> 0 gives the mean and
          r -> inf the max. Computed with logsumexp, so large r x does not overflow.
None has an attention map: every token weighs 1/N inside the mean (the max picks one token per
channel, not per image). Computed in float32: powers and exponentials are where bf16 loses.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class Max(nn.Module):
    """Global max pooling over the N tokens. Returns (pooled (B, D), None)."""

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, None]:
        return tokens.max(axis=1), None


class GeM(nn.Module):
    """Generalised mean with a learnable exponent (init `gamma`, 3 as in Radenovic et al.)."""

    gamma: float = 3.0
    eps: float = 1e-6

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, None]:
        gamma = self.param("gamma", nn.initializers.constant(self.gamma), (1,))
        x = jnp.maximum(tokens.astype(jnp.float32), self.eps)
        return jnp.mean(x**gamma, axis=1) ** (1.0 / gamma), None


class LSE(nn.Module):
    """Log-sum-exp pooling with a learnable sharpness (init `r`; the repo's 'learnlse' uses 10)."""

    r: float = 10.0

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, None]:
        r = self.param("r", nn.initializers.constant(self.r), (1,))
        x = tokens.astype(jnp.float32)
        return (jax.nn.logsumexp(r * x, axis=1) - math.log(x.shape[1])) / r, None
