"""Poolers: `(tokens (B, N, D), grid (h, w), cls=None) -> (pooled (B, D'), attention (B, N) | None)`.

Every pooler obeys that contract and knows no backbone, so any backbone takes any pooler by name.
"""

from __future__ import annotations

import flax.linen as nn

from simpool_jax.pooling.baselines import CLS, GAP
from simpool_jax.pooling.cbam import CBAM
from simpool_jax.pooling.class_attention import CaiTPool, ClassAttentionPool
from simpool_jax.pooling.excite import GE, SE
from simpool_jax.pooling.how import HOW
from simpool_jax.pooling.kmeans import KMeans
from simpool_jax.pooling.means import LSE, GeM, Max
from simpool_jax.pooling.otk import OTK
from simpool_jax.pooling.simpool import SimPool
from simpool_jax.pooling.simpool_ablations import SimPoolAblation
from simpool_jax.pooling.slot import SlotAttention

POOLERS: dict[str, type[nn.Module]] = {"simpool": SimPool, "gap": GAP, "cls": CLS}
# The paper's comparison poolers (Table 1, Figure 3, Table 2) and SimPool's Table 10 ablations.
POOLERS.update({
    "max": Max, "gem": GeM, "lse": LSE, "how": HOW,
    "otk": OTK, "kmeans": KMeans, "slot": SlotAttention,
    "se": SE, "ge": GE, "cbam": CBAM,
    "cls_block": ClassAttentionPool, "cait": CaiTPool,
    "simpool_ablation": SimPoolAblation,
})


def get_pooler(pooling: str, **kwargs) -> nn.Module:
    """Build the pooler registered as `pooling` with its keyword options."""
    if pooling not in POOLERS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {sorted(POOLERS)}")
    return POOLERS[pooling](**kwargs)


__all__ = ["POOLERS", "get_pooler", "SimPool", "GAP", "CLS"]
