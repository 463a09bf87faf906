"""The poolers SimPool replaces: global average pooling (CNNs) and the class token (ViTs)."""

from __future__ import annotations

import flax.linen as nn
import jax


class GAP(nn.Module):
    """Global average pooling over the N tokens. No attention map."""

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, None]:
        return tokens.mean(axis=1), None


class CLS(nn.Module):
    """The ViT class token as the representation. Needs a backbone built with a class token."""

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, None]:
        if cls is None:
            raise ValueError(
                "pooling='cls' needs a backbone with a class token (a ViT with class_token=True)"
            )
        return cls, None
