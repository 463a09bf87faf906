"""fusion_fence: an exact identity (values and cotangents) that stops XLA's quadratic fusion.

The structural test reads the compiled HLO of a ViT / ResNet gradient: each fused computation's
op metadata names the blocks its instructions come from. Without the fence, XLA:CPU fuses the
residual chain into per-layer fusions that span every later block (all 6 of these stacks);
with it, none spans more than the blocks that meet at a boundary (2 for the ViT, 3 for the
ResNet, whose fence sits after the block's ReLU). If the no-fence half starts failing after an XLA
upgrade, XLA stopped duplicating those chains and the fence may no longer be needed. The ViT's
unfenced half also uses nn.LayerNorm on the (b, n, d) tokens: our LayerNorm's reshape to rows
alone already keeps XLA from fusing across more than 3 blocks there.
"""

import functools
import re

import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simpool_jax.models import resnet, vit
from simpool_jax.models.layers import fusion_fence


def test_fusion_fence_is_the_identity_on_values_and_cotangents():
    # Normal floats only: XLA:CPU flushes subnormals to zero in every arithmetic op.
    x = np.array([0.0, -0.0, 1.5, -3.25e-30, 7.0e37, -1e-3, 2.0**-126], np.float32)
    y, vjp = jax.vjp(fusion_fence, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(y), x)
    assert np.signbit(np.asarray(y)[1])
    cotangent = np.array([1.0, -2.0, 0.0, 3e38, -1e-37, 5.0, -0.0], np.float32)
    np.testing.assert_array_equal(np.asarray(vjp(jnp.asarray(cotangent))[0]), cotangent)


def _tiny_vit() -> vit.ViT:
    return vit.ViT(width=32, depth=6, num_heads=2, patch_size=4, posemb_grid=(4, 4))


def _tiny_resnet() -> resnet.ResNet:
    return resnet.ResNet(stage_sizes=(6,), bottleneck=False, width=8)


def _gradient(backbone, images: jax.Array):
    variables = backbone.init(jax.random.PRNGKey(0), images[:1])

    def loss(params):
        out, _ = backbone.apply({**variables, "params": params}, images, train=True,
                                mutable=["batch_stats"])
        return jnp.mean(jnp.square(out.tokens))

    return jax.jit(jax.grad(loss)), variables["params"]


def _most_blocks_in_one_fusion(hlo: str, block: str) -> int:
    """The largest number of distinct residual blocks whose ops one fused computation holds."""
    bodies = re.findall(r"^%fused_computation[^\n]*\{\n(.*?)^\}", hlo, re.M | re.S)
    return max(len(set(re.findall(block, body))) for body in bodies)


@pytest.mark.parametrize("build, module, block", [
    (_tiny_vit, vit, r"blocks_(\d+)/"), (_tiny_resnet, resnet, r"layer1_(\d+)/")])
def test_fusion_fence_keeps_backward_fusions_within_a_block_boundary(build, module, block,
                                                                      monkeypatch):
    images = jnp.asarray(np.random.default_rng(0).standard_normal((4, 16, 16, 3)), jnp.float32)
    grad, params = _gradient(build(), images)
    fenced = grad.lower(params).compile()
    assert _most_blocks_in_one_fusion(fenced.as_text(), block) <= 3

    monkeypatch.setattr(module, "fusion_fence", lambda x: x)
    if module is vit:  # unfenced with nn.LayerNorm: ours alone cuts the chains (docstring)
        monkeypatch.setattr(vit, "LayerNorm", functools.partial(
            flax.linen.LayerNorm, epsilon=1e-6, use_fast_variance=False))
    grad_plain, _ = _gradient(build(), images)
    plain = grad_plain.lower(params).compile()
    assert _most_blocks_in_one_fusion(plain.as_text(), block) >= 5

    # Same gradients either way (fusion may reorder float sums, nothing more).
    for a, b in zip(jax.tree.leaves(fenced(params)), jax.tree.leaves(plain(params))):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
