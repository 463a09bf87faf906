"""Every registered pooler obeys the contract: (B, N, D) tokens and a grid in, (B, D') and
(B, N) | None out, B = 1 included; jit and a batch sharded over 8 fake devices give the
unsharded result; gradients are finite; `build_model` selects it by name for every backbone."""

import jax
import jax.numpy as jnp
import pytest
from pooler_checks import check_contract

from simpool_jax.model import build_model
from simpool_jax.pooling import POOLERS

VARIANTS = [(name, {}) for name in sorted(POOLERS) if name != "cls"] + [
    ("otk", {"readout": "max", "num_references": 2}),
    ("kmeans", {"readout": "max"}),
    ("ge", {"extent": 4}),
    ("how", {"dim": 5}),
    ("simpool_ablation", {"gamma": 2.0, "use_beta": True, "num_heads": 2, "iterations": 2}),
    ("simpool_ablation", {"query_init": "learnable", "similarity": "l2", "shared_qk": True}),
    ("simpool_ablation", {"similarity": "cosine", "min_over": "sample", "gamma": 1.25}),
]


@pytest.mark.parametrize("name,kwargs", VARIANTS, ids=lambda v: str(v))
def test_contract(name, kwargs):
    check_contract(name, kwargs)


TINY = {"vit_tiny": {"depth": 1}, "resnet18": {"stage_sizes": (1, 1, 1, 1)},
        "convnext_tiny": {"depths": (1, 1, 1, 1)}}
# Output width relative to D for the default options.
WIDTH_FACTOR = {"otk": 4, "kmeans": 3}


@pytest.mark.parametrize("pooling", sorted(set(POOLERS) - {"cls", "simpool", "gap"}))
@pytest.mark.parametrize("backbone", sorted(TINY))
def test_selectable_by_config(backbone, pooling):
    model = build_model(dict(backbone=backbone, backbone_kwargs=TINY[backbone], pooling=pooling,
                             head="linear", num_classes=5))
    images = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
    out, _ = jax.eval_shape(model.init_with_output, jax.random.PRNGKey(0), images)
    d = out["tokens"].shape[-1]
    assert out["pooled"].shape == (2, d * WIDTH_FACTOR.get(pooling, 1))
    assert out["logits"].shape == (2, 5)
    assert "attention" not in out or out["attention"].shape == out["tokens"].shape[:2]
