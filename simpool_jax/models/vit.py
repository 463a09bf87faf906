"""Vision Transformer (timm / DINO layout), returning patch tokens and an optional class token.

Pre-LN blocks, fused qkv with bias, exact GELU, LayerNorm eps 1e-6: the architecture of timm's
`vit_*_patch16_224` and of DINO's `vision_transformer.py`, so their weights map one to one
(`simpool_jax.convert`). The final LayerNorm is not here: where it sits relative to pooling
differs per recipe (SIMPOOL.md §2), so `simpool_jax.model` applies it.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.models.base import BackboneOutput
from simpool_jax.models.layers import (Dense, DropPath, LayerNorm, Mlp, PatchEmbed, drop_path_rates,
                                      fusion_fence, trunc_normal_02)
from simpool_jax.models.matmul import matmul
from simpool_jax.models.posemb import resample_grid

VIT_SIZES = {
    "vit_tiny": dict(width=192, depth=12, num_heads=3),
    "vit_small": dict(width=384, depth=12, num_heads=6),
    "vit_base": dict(width=768, depth=12, num_heads=12),
}


class Attention(nn.Module):
    """Multi-head self-attention with torch's fused qkv layout: rows [q; k; v] x heads x dh."""

    num_heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, n, d = x.shape
        dh = d // self.num_heads
        qkv = Dense(3 * d, kernel_init=trunc_normal_02, name="qkv")(x)
        # Heads-major (3, b, h, n, dh) before the matmuls: XLA:CPU fuses the token-major einsum
        # form into one slow loop (ViT-S forward 0.68x PyTorch); batched `@` on this layout
        # goes to its fast dot kernels. Scaling q first, as timm does.
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, dh).transpose(2, 0, 3, 1, 4)
        attn = jax.nn.softmax(matmul(q * dh**-0.5, k.swapaxes(-1, -2)), axis=-1)
        # Kept only when the caller makes 'intermediates' mutable (attention maps of CLS models).
        self.sow("intermediates", "attention", attn)
        out = matmul(attn, v).transpose(0, 2, 1, 3).reshape(b, n, d)
        return Dense(d, kernel_init=trunc_normal_02, name="proj")(out)


class Block(nn.Module):
    """x + DropPath(Attn(LN(x))); x + DropPath(MLP(LN(x)))."""

    num_heads: int
    mlp_ratio: float = 4.0
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        d = x.shape[-1]
        drop = DropPath(self.drop_path)
        x = x + drop(Attention(self.num_heads, name="attn")(LayerNorm(name="norm1")(x)), not train)
        y = Mlp(int(d * self.mlp_ratio), d, name="mlp")(LayerNorm(name="norm2")(x))
        return x + drop(y, not train)


class ViT(nn.Module):
    """ViT backbone. `class_token=False` is the SimPool ViT (no CLS parameter, no CLS pos slot).

    The position embedding is learned for `posemb_grid` and resized to the input's grid by
    `posemb_resample` (see `simpool_jax.models.posemb.resample_grid`): 'dino_quirk' reproduces
    the official DINO-SimPool ViT, which resamples even at its training size.
    """

    width: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    patch_size: int = 16
    class_token: bool = False
    posemb_grid: tuple[int, int] = (14, 14)
    posemb_resample: str = "none"
    drop_path_rate: float = 0.0

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> BackboneOutput:
        x = PatchEmbed(self.width, self.patch_size, name="patch_embed")(images)
        b, gh, gw, d = x.shape
        x = x.reshape(b, gh * gw, d)
        n_cls = int(self.class_token)
        n_grid = self.posemb_grid[0] * self.posemb_grid[1]
        posemb = self.param("pos_embed", trunc_normal_02, (1, n_cls + n_grid, d))
        patch_pos = resample_grid(posemb[:, n_cls:], self.posemb_grid, (gh, gw), self.posemb_resample)
        x = x + patch_pos.astype(x.dtype)
        if self.class_token:
            cls = self.param("cls_token", trunc_normal_02, (1, 1, d))
            cls = jnp.broadcast_to(cls + posemb[:, :1], (b, 1, d)).astype(x.dtype)
            x = jnp.concatenate([cls, x], axis=1)
        for i, rate in enumerate(drop_path_rates(self.drop_path_rate, self.depth)):
            x = Block(self.num_heads, self.mlp_ratio, rate, name=f"blocks_{i}")(fusion_fence(x), train)
        if self.class_token:
            return BackboneOutput(tokens=x[:, 1:], grid=(gh, gw), cls=x[:, 0])
        return BackboneOutput(tokens=x, grid=(gh, gw))
