"""Heads on top of the pooled features: the DINO projection head (the linear classifier is a
`Dense` in `simpool_jax.model`)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.models.layers import Dense, gelu, trunc_normal_02
from simpool_jax.models.matmul import matmul


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
    """torch.nn.functional.normalize: x / max(||x||, 1e-12) (no eps inside the root)."""
    norm = jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True))
    return x / jnp.maximum(norm, 1e-12)


@jax.custom_vjp
def column_sums_of_squares(v: jax.Array) -> jax.Array:
    """sum_i v[i, j]^2 for a 2-D v, accumulated in float32, returned in v's dtype.

    On CPU as a loop over the rows (each adds one row to a running row of sums): XLA:CPU's
    reduction over the leading axis of the DINO head's (256, 65536) last layer takes 36 ms, the
    loop 2.7 ms (one core); the student and the teacher each need it every step. Elsewhere the
    plain reduction. The gradient is 2 v g, by hand, so that no loop is differentiated.
    """
    v = jnp.asarray(v)
    if jax.default_backend() != "cpu":
        return jnp.sum(jnp.square(v.astype(jnp.float32)), axis=0).astype(v.dtype)

    def add_row(i: jax.Array, sums: jax.Array) -> jax.Array:
        return sums + jnp.square(v[i].astype(jnp.float32))

    sums = jax.lax.fori_loop(0, v.shape[0], add_row, jnp.zeros(v.shape[1], jnp.float32), unroll=8)
    return sums.astype(v.dtype)


def _column_sums_of_squares_fwd(v: jax.Array) -> tuple[jax.Array, jax.Array]:
    return column_sums_of_squares(v), v


def _column_sums_of_squares_bwd(v: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    return ((2 * v.astype(jnp.float32) * g.astype(jnp.float32)).astype(v.dtype),)


column_sums_of_squares.defvjp(_column_sums_of_squares_fwd, _column_sums_of_squares_bwd)


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
            x = Dense(
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
        scale = 1.0 / jnp.sqrt(column_sums_of_squares(v))
        if not self.norm_last_layer:
            scale = scale * self.param("last_layer_g", nn.initializers.ones, (self.out_dim,))
        return matmul(x, v) * scale
