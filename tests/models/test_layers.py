"""Stochastic depth and the numerics pinned in simpool_jax.models.layers."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from simpool_jax.models.layers import (
    Dense, DepthwiseConv, DropPath, LayerNorm, PatchEmbed, depthwise_conv_shifted, drop_path_rates,
    gelu,
)

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
    x = np.linspace(-12, 12, 20001, dtype=np.float32)  # both tails: erf saturates, x/2 (1 + erf) -> 0
    np.testing.assert_allclose(gelu(x), torch.nn.functional.gelu(torch.from_numpy(x)).numpy(),
                               atol=1e-6, rtol=1e-6)
    h = (np.random.default_rng(0).standard_normal((4, 16)) * 3 + 100).astype(np.float32)
    ours = LayerNorm().apply({"params": {"scale": jnp.ones(16), "bias": jnp.zeros(16)}}, h)
    ref = torch.nn.functional.layer_norm(torch.from_numpy(h), (16,), eps=1e-6).numpy()
    np.testing.assert_allclose(ours, ref, atol=2e-5)

def test_depthwise_conv_matches_torch_grouped_conv_and_keeps_nn_conv_params():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 9, 6, 5)).astype(np.float32)
    kernel = rng.standard_normal((7, 7, 1, 5)).astype(np.float32)
    bias = rng.standard_normal(5).astype(np.float32)
    conv = torch.nn.Conv2d(5, 5, 7, padding=3, groups=5)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
        conv.bias.copy_(torch.from_numpy(bias))
        ref = conv(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    module = DepthwiseConv(7)
    shapes = jax.tree.map(jnp.shape, module.init(jax.random.PRNGKey(0), x)["params"])
    assert shapes == {"kernel": (7, 7, 1, 5), "bias": (5,)}  # what nn.Conv(groups=C) has
    ours = module.apply({"params": {"kernel": kernel, "bias": bias}}, x)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    grouped = jax.lax.conv_general_dilated(x, kernel, (1, 1), ((3, 3), (3, 3)),
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                           feature_group_count=5)
    np.testing.assert_allclose(depthwise_conv_shifted(x, kernel), grouped, atol=2e-5)

@pytest.mark.parametrize("k", [7, 3])
def test_depthwise_conv_gradients_match_torch_grouped_conv(k):
    """The CPU path's gradients (autodiff through the k*k shifted slices) against torch's
    autograd of a grouped conv, with a non-uniform cotangent and a non-square map smaller than
    the kernel in one dimension: every border case of the zero padding."""
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 9, 5, 4)).astype(np.float32)
    kernel = rng.standard_normal((k, k, 1, 4)).astype(np.float32)
    cotangent = rng.standard_normal((2, 9, 5, 4)).astype(np.float32)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    wt = torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()).requires_grad_()
    yt = torch.nn.functional.conv2d(xt, wt, padding=k // 2, groups=4)
    yt.backward(torch.from_numpy(cotangent.transpose(0, 3, 1, 2).copy()))
    _, vjp = jax.vjp(depthwise_conv_shifted, x, kernel)
    dx, dk = vjp(cotangent)
    np.testing.assert_allclose(dx, xt.grad.numpy().transpose(0, 2, 3, 1), atol=2e-5)
    np.testing.assert_allclose(dk, wt.grad.numpy().transpose(2, 3, 1, 0), atol=5e-5)
    # bf16 activations with an fp32 kernel (mixed precision): gradients keep the primal dtypes
    # and stay within bf16 rounding of the fp32 ones.
    _, vjp16 = jax.vjp(depthwise_conv_shifted, x.astype(jnp.bfloat16), kernel)
    dx16, dk16 = vjp16(cotangent.astype(jnp.bfloat16))
    assert dx16.dtype == jnp.bfloat16 and dk16.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(dk16), dk, rtol=0.05, atol=0.3)

def _transposes_in_compiled_weight_gradient(layer: nn.Module, x: np.ndarray) -> tuple[list, dict]:
    variables = layer.init(jax.random.PRNGKey(0), x)
    grad = jax.jit(jax.grad(lambda v: jnp.sum(jnp.sin(layer.apply(v, x)))))
    hlo = grad.lower(variables).compile().as_text()
    return [line for line in hlo.splitlines() if " transpose(" in line], grad(variables)

def test_dense_is_nn_dense_without_the_cotangent_transpose():
    """Same parameters, init, outputs and gradients as nn.Dense on a (b, n, d) input; in the
    compiled gradient, nn.Dense transposes the (b, n, features) cotangent before the weight
    gradient's dot (the XLA:CPU slowdown `Dense` exists for) and `Dense` does not."""
    x = np.random.default_rng(3).standard_normal((16, 49, 32)).astype(np.float32)
    ours, reference = Dense(64, name="fc"), nn.Dense(64, name="fc")
    params = reference.init(jax.random.PRNGKey(1), x)
    chex.assert_trees_all_equal(ours.init(jax.random.PRNGKey(1), x), params)  # names, shapes, init
    np.testing.assert_allclose(ours.apply(params, x), reference.apply(params, x), atol=1e-5)
    transposes, grads = _transposes_in_compiled_weight_gradient(ours, x)
    transposes_nn, grads_nn = _transposes_in_compiled_weight_gradient(reference, x)
    if jax.default_backend() == "cpu":
        assert transposes == [] and len(transposes_nn) == 1, (transposes, transposes_nn)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_nn)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

def test_patch_embed_matches_torch_strided_conv_and_inits_as_nn_conv():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 18, 14, 3)).astype(np.float32)  # 18 and 14 leave a remainder of 2
    kernel = rng.standard_normal((4, 4, 3, 8)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    conv = torch.nn.Conv2d(3, 8, 4, stride=4)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).copy()))
        conv.bias.copy_(torch.from_numpy(bias))
        ref = conv(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)
    ours = PatchEmbed(8, 4).apply({"params": {"kernel": kernel, "bias": bias}}, x)
    assert ours.shape == (2, 4, 3, 8)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    # Same parameters from the same rng as the nn.Conv it replaced: earlier runs stay reproducible.
    key = jax.random.PRNGKey(3)
    conv_init = nn.Conv(8, (4, 4), strides=(4, 4), padding="VALID").init(key, x)["params"]
    ours_init = PatchEmbed(8, 4).init(key, x)["params"]
    jax.tree.map(np.testing.assert_array_equal, ours_init, conv_init)

def test_patch_embed_on_a_batch_sharded_under_an_explicit_axes_mesh():
    """jax.make_mesh's default (explicit) axes: the reshapes must keep the batch sharding."""
    from jax.sharding import NamedSharding, PartitionSpec

    mesh = jax.make_mesh((4,), ("data",))
    x = np.random.default_rng(2).standard_normal((8, 12, 12, 3)).astype(np.float32)
    params = PatchEmbed(8, 4).init(jax.random.PRNGKey(0), x)
    sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    out = jax.jit(PatchEmbed(8, 4).apply)(params, sharded)
    np.testing.assert_allclose(out, PatchEmbed(8, 4).apply(params, x), atol=1e-6)
