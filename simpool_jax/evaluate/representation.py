"""The representation a frozen-backbone evaluation reads (DINO's eval_linear.py, SIMPOOL.md §5.2).

SimPool / GAP models and CNNs: the model's `features` (the same vector as k-NN). Official CLS ViTs:
the final-norm CLS token of each of the last `n_last_blocks` blocks, concatenated (DINO's
`get_intermediate_layers`); with 1 block that is again `features`. The backbone runs in eval mode
(BatchNorm running statistics, no stochastic depth) and nothing here is differentiated.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from simpool_jax.model import Model
from simpool_jax.models import backbone_family
from simpool_jax.models.layers import LayerNorm
from simpool_jax.models.vit import Block

Represent = Callable[[dict, jax.Array], jax.Array]


def _is_block(module, method: str) -> bool:
    return isinstance(module, Block) and method == "__call__"


def representation(model: Model, n_last_blocks: int = 1) -> Represent:
    """(variables, images) -> (B, D * n_last_blocks) features of `model` in eval mode."""
    if n_last_blocks < 1:
        raise ValueError(f"n_last_blocks must be >= 1, got {n_last_blocks}")
    if n_last_blocks == 1:
        return lambda variables, images: model.apply(variables, images, with_head=False)["features"]
    if backbone_family(model.backbone) != "vit" or model.pooling != "cls" or model.norm != "before":
        raise ValueError("n_last_blocks > 1 needs a CLS-token ViT with its final norm before "
                         f"pooling (got backbone {model.backbone!r}, pooling {model.pooling!r}, norm "
                         f"{model.norm!r}); other models use their features (n_last_blocks 1)")

    def represent(variables: dict, images: jax.Array) -> jax.Array:
        _, state = model.apply(variables, images, with_head=False, capture_intermediates=_is_block,
                               mutable=["intermediates"])
        blocks = state["intermediates"]["backbone"]
        depth = len([name for name in blocks if name.startswith("blocks_")])
        if n_last_blocks > depth:
            raise ValueError(f"n_last_blocks {n_last_blocks} exceeds the ViT's {depth} blocks")
        norm = {"params": variables["params"]["norm"]}
        cls = [LayerNorm().apply(norm, blocks[f"blocks_{i}"]["__call__"][0][:, 0])
               for i in range(depth - n_last_blocks, depth)]
        return jnp.concatenate(cls, axis=-1)

    return represent
