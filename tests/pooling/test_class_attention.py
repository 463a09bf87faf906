"""ViT-style class-token block and CaiT class attention against float64 numpy
(simpool_jax.pooling.class_attention). Layer scales are drawn at O(1): at their 1e-5 init the
attention and MLP branches would vanish and a wrong branch would still pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pooler_checks import as_numpy, random_params, rng_for, run
from reference import np_layer_norm
from scipy.special import erf

from simpool_jax.pooling import get_pooler


def layer_norm(x, p):
    return np_layer_norm(x, p["scale"], p["bias"])


def dense(x, p):
    return x @ p["kernel"] + p["bias"]


def np_class_attention(x, p, heads, layer_scale):
    b, n, d = x.shape
    c = np.repeat(p["cls_token"][:, 0], b, axis=0)            # (B, D)
    u = layer_norm(np.concatenate([c[:, None], x], 1), p["norm1"])
    q, k, v = dense(u[:, 0], p["q"]), dense(u, p["k"]), dense(u, p["v"])
    dh = d // heads
    out, maps = np.zeros((b, d)), np.zeros((b, heads, n + 1))
    for h in range(heads):
        s = slice(h * dh, (h + 1) * dh)
        logits = np.einsum("bc,bnc->bn", q[:, s], k[:, :, s]) / np.sqrt(dh)
        a = np.exp(logits - logits.max(-1, keepdims=True))
        maps[:, h] = a / a.sum(-1, keepdims=True)
        out[:, s] = np.einsum("bn,bnc->bc", maps[:, h], v[:, :, s])
    g1 = p["gamma_1"] if layer_scale else 1.0
    g2 = p["gamma_2"] if layer_scale else 1.0
    c = c + g1 * dense(out, p["proj"])
    hidden = dense(layer_norm(c, p["norm2"]), p["mlp"]["fc1"])
    c = c + g2 * dense(0.5 * hidden * (1 + erf(hidden / np.sqrt(2))), p["mlp"]["fc2"])
    return layer_norm(c, p["norm"]), maps[:, :, 1:].mean(1)


@pytest.mark.parametrize("name", ["cls_block", "cait"])
@pytest.mark.parametrize("shape,heads", [((1, 4, 8), 2), ((3, 9, 12), 3), ((2, 6, 8), 1)])
def test_class_attention_matches_numpy(name, shape, heads):
    rng = rng_for(name, shape, heads)
    x = rng.standard_normal(shape).astype(np.float32)
    params = random_params(name, {"num_heads": heads}, shape, (1, shape[1]), rng)
    pooled, attention = run(name, {"num_heads": heads}, params, x, (1, shape[1]))
    ref, ref_attention = np_class_attention(x.astype(np.float64), as_numpy(params), heads,
                                            layer_scale=name == "cait")
    np.testing.assert_allclose(attention, ref_attention, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(pooled, ref, atol=1e-5, rtol=1e-5)
    assert np.all(attention.sum(-1) < 1.0)  # the class token's weight on itself is left out


def test_cait_has_layer_scales_from_1e5_and_the_vit_block_none():
    def names(name):
        pooler = get_pooler(name)
        tokens = jnp.zeros((1, 4, 8))
        shapes = jax.eval_shape(lambda: pooler.init(jax.random.PRNGKey(0), tokens, (2, 2)))
        return set(shapes["params"])

    assert names("cait") - names("cls_block") == {"gamma_1", "gamma_2"}
    assert get_pooler("cait").layer_scale == 1e-5 and get_pooler("cls_block").layer_scale is None
