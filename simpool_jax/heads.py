"""Heads on top of the pooled features: the DINO projection head (the linear classifier is a
plain `nn.Dense` in `simpool_jax.model`)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.models.layers import gelu, trunc_normal_02


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    """torch.nn.functional.normalize: x / max(||x||, 1e-12) (no eps inside the root)."""
    norm = jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True))
    return x / jnp.maximum(norm, 1e-12)


class DINOHead(nn.Module):
    """MLP (in -> hidden -> ... -> bottleneck), l2-normalise, weight-normed linear to out_dim.

    Layers `linear_{i}` (+ `bn_{i}` with use_bn) with exact GELU between them, none after the
    last. The last layer is stored as weight-norm direction `last_layer_v` (bottleneck, out_dim);
    its per-output gain `last_layer_g` exists only with norm_last_layer=False. With
    norm_last_layer=True the gain is fixed at 1 (torch: weight_g frozen at 1), which makes the
    last layer a cosine classifier.
    """

    out_dim: int = 65536
    use_bn: bool = False
    norm_last_layer: bool = True
    nlayers: int = 3
    hidden_dim: int = 2048
    bottleneck_dim: int = 256

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        nlayers = max(self.nlayers, 1)
        for i in range(nlayers):
            last = i == nlayers - 1
            x = nn.Dense(
                self.bottleneck_dim if last else self.hidden_dim,
                kernel_init=trunc_normal_02,
                name=f"linear_{i}",
            )(x)
            if not last:
                if self.use_bn:
                    x = nn.BatchNorm(
                        use_running_average=not train, momentum=0.9, epsilon=1e-5, name=f"bn_{i}"
                    )(x)
                x = gelu(x)
        x = l2_normalize(x)
        v = self.param(
            "last_layer_v",
            nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform"),  # torch Linear default
            (self.bottleneck_dim, self.out_dim),
        )
        # x @ (v / ||v||) computed as (x @ v) / ||v||: the same product (rounding aside) without
        # the (bottleneck, out_dim) normalised weight, whose forward XLA:CPU fused into the
        # matmul (recomputing the norm per output element: 9 s of a 17 s ViT-S DINO step at
        # out_dim 65536) and whose backward reduced a second (bottleneck, out_dim) product.
        scale = 1.0 / jnp.sqrt(jnp.sum(v * v, axis=0))
        if not self.norm_last_layer:
            scale = scale * self.param("last_layer_g", nn.initializers.ones, (self.out_dim,))
        return (x @ v) * scale
