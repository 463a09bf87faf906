"""Parameter counts (M) of full-size classifiers (1000 classes) against the paper's Table 8.

Counted on `jax.eval_shape` of `build_model`, so no weights are materialised. Each pooler's cost
follows from its formula: CaiT one class-attention block (12 D^2), Slot Attention 11 D^2 (slot
size and MLP width D), GE its excite MLP (D^2 / 8) plus a depthwise gather conv, SimPool
2 D^2 + 2 D. The ViT-S baseline has a class token; the others replace it (no class token).
ResNet-18's CaiT cell came through garbled in our copy of the paper ("18.0?"); ours is 14.8.
"""

import jax
import jax.numpy as jnp
import pytest

from simpool_jax.model import build_model

TABLE_8 = {  # backbone: {pooling: paper's M}; 'gap' / 'cls' is the baseline row
    "resnet18": {"gap": 11.7, "slot": 14.6, "ge": 11.7, "simpool": 12.2},
    "resnet50": {"gap": 25.6, "cait": 75.9, "slot": 71.7, "ge": 26.1, "simpool": 33.9},
    "convnext_small": {"gap": 50.2, "cait": 57.3, "slot": 56.7, "ge": 50.3, "simpool": 51.4},
    "vit_small": {"cls": 22.1, "cait": 23.8, "slot": 23.7, "ge": 22.1, "simpool": 22.3},
}


def count(backbone: str, pooling: str) -> int:
    model = build_model(dict(backbone=backbone, pooling=pooling, head="linear", num_classes=1000))
    images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)["params"]
    return sum(leaf.size for leaf in jax.tree.leaves(params))


@pytest.mark.parametrize("backbone", sorted(TABLE_8))
def test_parameter_counts_match_table_8(backbone):
    ours = {pooling: count(backbone, pooling) for pooling in TABLE_8[backbone]}
    print(backbone, {p: round(n / 1e6, 2) for p, n in ours.items()})
    assert {p: round(n / 1e6, 1) for p, n in ours.items()} == TABLE_8[backbone]
