"""SimPool (Psomas et al., ICCV 2023), exactly as the official `sp.py` computes it.

For tokens X (B, N, d), per sample:
    u0 = mean_n x_n                                  (GAP of the *raw* tokens: the query init)
    z_n = LN(x_n)                                    (eps 1e-6, affine; keys *and* values)
    q = W_Q u0,  k_n = W_K z_n                       (d x d, no bias; one head)
    a = softmax_n(q . k_n / sqrt(d))                 (attention over the N tokens)
    no gamma:   u = sum_n a_n z_n
    gamma:      v_n = z_n - m + eps,  u = (sum_n a_n v_n^gamma)^(1/gamma)  [+ beta]
where m is the minimum of Z over the whole batch (official, `min_over='batch'`) or over each
sample (the paper's definition, `min_over='sample'`). The shift is not undone. There is no value
or output projection. Computed in float32 whatever the input dtype, products included (also
inside `bf16_matmuls()`): the min-shift and the two powers are where bf16 would lose the
features, and the published runs were float32 throughout.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.models.layers import Dense, LayerNorm, trunc_normal_02
from simpool_jax.models.matmul import bf16_matmuls

MIN_OVER = ("batch", "sample")


class SimPool(nn.Module):
    """Attention pooling with a GAP-initialised query. Returns (pooled (B, d), attention (B, N)).

    gamma: None for the attention-weighted mean of LN(X); a float for the generalised power mean
    (official defaults 1.25 for ViT, 2.0 for CNNs). use_beta: learnable scalar added after the
    power mean (DINO ViT only). min_over: 'batch' reproduces the official features (the minimum is
    taken over the whole batch of the call, so outputs depend on the batch); 'sample' is the
    paper's per-image definition.
    """

    gamma: float | None = None
    use_beta: bool = False
    min_over: str = "batch"
    eps: float = 1e-6

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        if self.min_over not in MIN_OVER:
            raise ValueError(f"SimPool min_over={self.min_over!r} not in {MIN_OVER}")
        with bf16_matmuls(False):
            return self._pool(tokens.astype(jnp.float32))

    def _pool(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        d = x.shape[-1]
        query_init = x.mean(axis=1)
        z = LayerNorm(name="norm_patches", dtype=jnp.float32)(x)
        q = Dense(d, use_bias=False, kernel_init=trunc_normal_02, name="wq")(query_init)
        k = Dense(d, use_bias=False, kernel_init=trunc_normal_02, name="wk")(z)
        attention = jax.nn.softmax(jnp.einsum("bd,bnd->bn", q, k) * d**-0.5, axis=-1)
        if self.gamma is None:
            return jnp.einsum("bn,bnd->bd", attention, z), attention
        if self.min_over == "batch":
            m = jnp.min(z)
        else:
            m = jnp.min(z, axis=(1, 2), keepdims=True)
        v = z - m + self.eps
        pooled = jnp.einsum("bn,bnd->bd", attention, v**self.gamma) ** (1.0 / self.gamma)
        if self.use_beta:
            pooled = pooled + self.param("beta", nn.initializers.zeros, (1,))
        return pooled, attention
