"""A learnable class token and one transformer block as a pooler: ViT and CaiT, Table 1 group 4.

With c a learnable token (D,) and u = [c; x_1..x_N] (B, N + 1, D):
    h  = LN1(u);  per head i (m heads of D/m channels):
         a_i = softmax over the N + 1 positions of (W_Q h_0)_i . (W_K h)_i / sqrt(D/m)
    c' = c  + g1 (.) W_O concat_i(a_i (W_V h)_i)          (q, k, v, proj with bias)
    c''= c' + g2 (.) MLP(LN2(c'))                          (D -> 4D -> D, exact GELU)
    u  = LN(c'')                                           (the final norm of both models)
'cls_block' (ViT): g1 = g2 = 1. Only the class token's output is kept, and in a ViT block the
class token's row of self-attention is exactly this, so the patch rows are never computed.
'cait' (CaiT class attention): g1, g2 learnable layer scales initialised at 1e-5, patches frozen.
One block with MLP ratio 4 costs 12 D^2, the paper's Table 8 (+50.3 M on ResNet-50 for CaiT).
The attention returned is the class token's weight on each of the N tokens, averaged over
heads (its weight on itself left out), the map the paper shows for CLS baselines.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.models.layers import Dense, LayerNorm, Mlp, trunc_normal_02


class ClassAttentionPool(nn.Module):
    """One class-attention block (ViT style). Returns (pooled (B, D), attention (B, N))."""

    num_heads: int = 4
    mlp_ratio: float = 4.0
    layer_scale: float | None = None

    def _scale(self, name: str, y: jax.Array) -> jax.Array:
        if self.layer_scale is None:
            return y
        return self.param(name, nn.initializers.constant(self.layer_scale), (y.shape[-1],)) * y

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        b, _, d = tokens.shape
        m = self.num_heads
        if d % m:
            raise ValueError(f"{m} heads do not divide the width {d}")
        token = self.param("cls_token", trunc_normal_02, (1, 1, d))
        c = jnp.broadcast_to(token, (b, 1, d)).astype(tokens.dtype)
        h = LayerNorm(name="norm1")(jnp.concatenate([c, tokens], axis=1))
        dense = lambda name: Dense(d, kernel_init=trunc_normal_02, name=name)  # noqa: E731
        q = dense("q")(h[:, 0]).reshape(b, m, d // m)
        k = dense("k")(h).reshape(b, -1, m, d // m)
        v = dense("v")(h).reshape(b, -1, m, d // m)
        attn = jax.nn.softmax(jnp.einsum("bhc,bnhc->bhn", q, k) * (d // m) ** -0.5, axis=-1)
        mixed = dense("proj")(jnp.einsum("bhn,bnhc->bhc", attn, v).reshape(b, d))
        c = c[:, 0] + self._scale("gamma_1", mixed)
        mlp = Mlp(int(d * self.mlp_ratio), d, name="mlp")
        c = c + self._scale("gamma_2", mlp(LayerNorm(name="norm2")(c)))
        return LayerNorm(name="norm")(c), attn[:, :, 1:].mean(axis=1)


class CaiTPool(ClassAttentionPool):
    """CaiT's class-attention block: the same with layer scale 1e-5 on both branches."""

    layer_scale: float | None = 1e-5
