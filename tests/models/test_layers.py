"""Stochastic depth and the numerics pinned in simpool_jax.models.layers."""

import functools
import re

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

def _two_axis_reduce_windows(norm, x: jax.Array, monkeypatch) -> list[tuple[str, str]]:
    """Reduce-windows spanning both token axes in the compiled gradient of a small ViT + SimPool
    + DINO head whose token LayerNorms (blocks, SimPool's) are `norm`: the pattern XLA:CPU forms
    in the DINO step, not in a lone LayerNorm's gradient."""
    import simpool_jax.models.vit as vit
    import simpool_jax.pooling.simpool as simpool
    from simpool_jax.model import build_model

    monkeypatch.setattr(vit, "LayerNorm", norm)
    monkeypatch.setattr(simpool, "LayerNorm", norm)
    model = build_model(dict(backbone="vit_tiny", pooling="simpool", recipe="dino", head="dino",
                             backbone_kwargs=dict(width=32, depth=2, num_heads=2, patch_size=4,
                                                  posemb_grid=(7, 7), posemb_resample="none"),
                             head_kwargs=dict(out_dim=16, hidden_dim=24, bottleneck_dim=8)))
    params = model.init(jax.random.PRNGKey(0), x)["params"]

    def loss(p):
        return jnp.sum(jnp.sin(model.apply({"params": p}, x)["logits"]))

    hlo = jax.jit(jax.grad(loss)).lower(params).compile().as_text()
    return [w for w in re.findall(r"window=\{size=(\d+)x(\d+)x1 ", hlo) if "1" not in w]


def test_layernorm_flattens_tokens_same_values_and_gradients_as_nn_layernorm(monkeypatch):
    """Same parameters, outputs and gradients as nn.LayerNorm (eps 1e-6, two-pass variance) on
    (b, n, d) tokens, checked against torch's layer_norm autograd; in a compiled ViT gradient on
    CPU, nn.LayerNorm's scale / bias sums become reduce-windows over both token axes (the slow
    XLA:CPU pattern `LayerNorm` flattens away) and ours do not."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((3, 5, 16)) * 2 + 1).astype(np.float32)
    scale, bias = (rng.standard_normal(16).astype(np.float32) for _ in range(2))
    c = rng.standard_normal((3, 5, 16)).astype(np.float32)
    params = {"params": {"scale": jnp.asarray(scale), "bias": jnp.asarray(bias)}}
    y, vjp = jax.vjp(lambda p, x: LayerNorm().apply(p, x), params, jnp.asarray(x))
    dparams, dx = vjp(jnp.asarray(c))
    xt, st, bt = (torch.tensor(a, requires_grad=True) for a in (x, scale, bias))
    yt = torch.nn.functional.layer_norm(xt, (16,), st, bt, eps=1e-6)
    yt.backward(torch.from_numpy(c))
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-5)
    for ours, ref in ((dx, xt), (dparams["params"]["scale"], st), (dparams["params"]["bias"], bt)):
        np.testing.assert_allclose(ours, ref.grad.numpy(), rtol=1e-5, atol=1e-5)
    if jax.default_backend() == "cpu":
        images = jnp.asarray(rng.standard_normal((16, 28, 28, 3)), jnp.float32)
        nn_norm = functools.partial(nn.LayerNorm, epsilon=1e-6, use_fast_variance=False)
        assert len(_two_axis_reduce_windows(nn_norm, images, monkeypatch)) >= 4
        # One stays with either norm, outside the LayerNorms.
        assert len(_two_axis_reduce_windows(LayerNorm, images, monkeypatch)) <= 1


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
