"""Poolers: `(tokens (B, N, D), grid (h, w), cls=None) -> (pooled (B, D'), attention (B, N) | None)`.

Every pooler obeys that contract and knows no backbone, so any backbone takes any pooler by name.
"""

from __future__ import annotations

import flax.linen as nn

from simpool_jax.pooling.baselines import CLS, GAP
from simpool_jax.pooling.simpool import SimPool

POOLERS: dict[str, type[nn.Module]] = {"simpool": SimPool, "gap": GAP, "cls": CLS}


def get_pooler(pooling: str, **kwargs) -> nn.Module:
    """Build the pooler registered as `pooling` with its keyword options."""
    if pooling not in POOLERS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {sorted(POOLERS)}")
    return POOLERS[pooling](**kwargs)


__all__ = ["POOLERS", "get_pooler", "SimPool", "GAP", "CLS"]
