"""Schedules against their closed forms; weight-decay masks as the official recipes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from simpool_jax.model import build_model
from simpool_jax.train.optim import decay_mask, make_optimizer, warmup_cosine


def test_warmup_cosine_closed_form():
    schedule = warmup_cosine(1e-3, total_steps=110, warmup_steps=10, min_value=1e-5, warmup_init=1e-6)
    expected = {0: 1e-6, 5: 1e-6 + (1e-3 - 1e-6) * 0.5, 10: 1e-3, 60: 1e-5 + 0.5 * (1e-3 - 1e-5),
                110: 1e-5, 200: 1e-5}
    for step, value in expected.items():
        assert float(schedule(step)) == pytest.approx(value, rel=1e-5), step
    t = 35 / 100
    assert float(schedule(45)) == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * t)), rel=1e-5)


def test_decay_mask_official_and_timm():
    model = build_model(dict(backbone="vit_tiny", backbone_kwargs={"depth": 1}, pooling="simpool",
                             pooling_kwargs={"gamma": 1.25, "use_beta": True}, recipe="supervised",
                             head="linear", num_classes=3))
    params = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 224, 224, 3)))["params"]
    official = decay_mask(params, exclude_posemb=False)
    timm = decay_mask(params, exclude_posemb=True)
    assert official["backbone"]["pos_embed"] and not timm["backbone"]["pos_embed"]
    assert official["backbone"]["blocks_0"]["attn"]["qkv"]["kernel"]
    assert not official["backbone"]["blocks_0"]["attn"]["qkv"]["bias"]
    assert not official["backbone"]["blocks_0"]["norm1"]["scale"]
    assert not official["pool"]["beta"] and official["pool"]["wq"]["kernel"]
    assert official["backbone"]["patch_embed"]["kernel"] and official["head"]["kernel"]


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars"])
def test_weight_decay_reaches_only_masked_leaves(name):
    params = {"w": jnp.ones((4, 4)), "b": jnp.ones((4,))}
    tx, _ = make_optimizer(dict(name=name, lr=0.1, weight_decay=0.5, momentum=0.0, nesterov=False),
                           total_steps=10, params=params)
    zero_grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = tx.update(zero_grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    np.testing.assert_array_equal(new["b"], params["b"])  # 1-D: no decay
    assert float(new["w"][0, 0]) < 1.0                    # matrices decay
