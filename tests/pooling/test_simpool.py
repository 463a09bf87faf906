"""SimPool against a float64 numpy implementation written from the equations (SIMPOOL.md §1)."""

import itertools
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference import np_simpool

from simpool_jax.pooling import get_pooler


def _random_params(d, rng, use_beta):
    params = {
        "norm_patches": {"scale": 1 + 0.3 * rng.standard_normal(d), "bias": 0.3 * rng.standard_normal(d)},
        "wq": {"kernel": rng.standard_normal((d, d)) / np.sqrt(d)},
        "wk": {"kernel": rng.standard_normal((d, d)) / np.sqrt(d)},
    }
    if use_beta:
        params["beta"] = np.array([0.37])
    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)


def _run(tokens, params, **options):
    pool = get_pooler("simpool", **options)
    return pool.apply({"params": params}, jnp.asarray(tokens), (1, tokens.shape[1]))


def _ref(tokens, params, gamma, use_beta, min_over):
    p = jax.tree.map(np.asarray, params)
    return np_simpool(
        tokens, p["norm_patches"]["scale"], p["norm_patches"]["bias"],
        p["wq"]["kernel"].T, p["wk"]["kernel"].T, gamma=gamma,
        beta=p["beta"] if use_beta else None, min_over=min_over,
    )


CASES = [
    (gamma, use_beta, min_over, shape)
    for gamma, use_beta, min_over in itertools.product((None, 1.0, 1.25, 2.0, 3.0), (False, True), ("batch", "sample"))
    if not (gamma is None and use_beta)
    for shape in ((1, 7, 16), (4, 49, 32))
]


@pytest.mark.parametrize("gamma,use_beta,min_over,shape", CASES)
def test_simpool_matches_numpy_reference(gamma, use_beta, min_over, shape):
    rng = np.random.default_rng(zlib.crc32(repr((gamma, use_beta, min_over, shape)).encode()))
    tokens = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    params = _random_params(shape[-1], rng, use_beta)
    pooled, attention = _run(tokens, params, gamma=gamma, use_beta=use_beta, min_over=min_over)
    ref_pooled, ref_attention = _ref(tokens, params, gamma, use_beta, min_over)
    assert pooled.shape == (shape[0], shape[2]) and attention.shape == shape[:2]
    np.testing.assert_allclose(attention, ref_attention, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(pooled, ref_pooled, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(attention).sum(-1), 1.0, atol=1e-6)


def test_batch_min_couples_samples_and_sample_min_does_not():
    """Official (batch) min: a sample's output depends on the other samples; paper's does not."""
    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((3, 10, 8)).astype(np.float32)
    tokens[2] *= 5.0  # a sample with a much lower minimum
    params = _random_params(8, rng, use_beta=False)
    alone = {m: _run(tokens[:1], params, gamma=2.0, min_over=m)[0] for m in ("batch", "sample")}
    batched = {m: _run(tokens, params, gamma=2.0, min_over=m)[0][:1] for m in ("batch", "sample")}
    np.testing.assert_allclose(batched["sample"], alone["sample"], atol=1e-6)
    assert np.abs(batched["batch"] - alone["batch"]).max() > 1e-2
    # Alone in its batch, the two definitions coincide.
    np.testing.assert_allclose(alone["batch"], alone["sample"], atol=1e-6)


def test_gamma_one_is_not_no_gamma():
    """gamma = 1 still shifts by the minimum and adds eps (SIMPOOL.md §8.4)."""
    rng = np.random.default_rng(1)
    tokens = rng.standard_normal((2, 5, 8)).astype(np.float32)
    params = _random_params(8, rng, use_beta=False)
    with_one = _run(tokens, params, gamma=1.0)[0]
    without = _run(tokens, params, gamma=None)[0]
    assert np.abs(with_one - without).max() > 0.1


def test_bf16_tokens_are_pooled_in_float32():
    rng = np.random.default_rng(2)
    tokens = rng.standard_normal((2, 9, 8)).astype(np.float32)
    params = _random_params(8, rng, use_beta=False)
    pooled, _ = _run(tokens.astype(jnp.bfloat16), params, gamma=1.25)
    assert pooled.dtype == jnp.float32


def test_parameter_names_and_count():
    d = 384
    variables = get_pooler("simpool", gamma=1.25, use_beta=True).init(
        jax.random.PRNGKey(0), jnp.zeros((1, 4, d)), (2, 2))
    leaves = jax.tree_util.tree_flatten_with_path(variables["params"])[0]
    names = sorted(jax.tree_util.keystr(p) for p, _ in leaves)
    assert names == ["['beta']", "['norm_patches']['bias']", "['norm_patches']['scale']",
                     "['wk']['kernel']", "['wq']['kernel']"]
    # 2 d^2 + 2 d (+ beta): the paper's +0.3 M for ViT-S.
    assert sum(v.size for _, v in leaves) == 2 * d * d + 2 * d + 1


def test_bad_min_over_is_a_clear_error():
    with pytest.raises(ValueError, match="min_over"):
        _run(np.zeros((1, 4, 8), np.float32), _random_params(8, np.random.default_rng(0), False),
             gamma=2.0, min_over="pixel")
