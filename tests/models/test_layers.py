"""Stochastic depth and the numerics pinned in simpool_jax.models.layers."""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from simpool_jax.models.layers import DropPath, LayerNorm, drop_path_rates, gelu


def test_drop_path_drops_whole_samples_at_the_rate_and_rescales():
    x = jnp.ones((20000, 3, 4))
    y = np.asarray(DropPath(0.3).apply({}, x, False, rngs={"dropout": jax.random.PRNGKey(0)}))
    per_sample = y.reshape(len(y), -1)
    assert np.all((per_sample == 0).all(1) | np.isclose(per_sample, 1 / 0.7).all(1))
    dropped = (per_sample == 0).all(1).mean()
    assert abs(dropped - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(y))
    np.testing.assert_array_equal(DropPath(0.3).apply({}, x, True), x)


def test_drop_path_rates_match_torch_linspace():
    np.testing.assert_allclose(drop_path_rates(0.4, 36), torch.linspace(0, 0.4, 36).numpy(), atol=1e-7)
    assert drop_path_rates(0.1, 1) == [0.0]


def test_gelu_is_exact_and_layernorm_matches_torch():
    x = np.linspace(-4, 4, 101, dtype=np.float32)
    np.testing.assert_allclose(gelu(x), torch.nn.functional.gelu(torch.from_numpy(x)).numpy(), atol=1e-6)
    h = (np.random.default_rng(0).standard_normal((4, 16)) * 3 + 100).astype(np.float32)
    ours = LayerNorm().apply({"params": {"scale": jnp.ones(16), "bias": jnp.zeros(16)}}, h)
    ref = torch.nn.functional.layer_norm(torch.from_numpy(h), (16,), eps=1e-6).numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-5)
