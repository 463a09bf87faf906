"""Building blocks shared by the backbones, pinned to the numerics of the PyTorch originals.

Flax defaults differ from PyTorch in ways that break parity silently: `nn.gelu` is the tanh
approximation, `nn.LayerNorm` uses the fast (E[x^2] - E[x]^2) variance, and `nn.Dense`
initialises with lecun-normal. Everything here follows the PyTorch originals instead.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.models.matmul import matmul


def gelu(x: jax.Array) -> jax.Array:
    """torch.nn.GELU(): the exact x/2 (1 + erf(x/sqrt 2)), in PyTorch's own formula.

    Flax's `nn.gelu` is the tanh approximation (it moves ViT tokens by ~2e-4). jax.nn.gelu's
    exact form is x/2 erfc(-x/sqrt 2), the same function, but XLA:CPU evaluates erfc with exp
    and branches: 2.6 ms against erf's 1.2 ms for a (6272, 384) activation on one core.
    """
    return x * (0.5 + 0.5 * jax.lax.erf(x * 0.7071067811865476))


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm with timm / DINO / ConvNeXt's eps 1e-6 and PyTorch's two-pass variance,
    applied to its input flattened to 2-D (same parameters and names).

    Why flattened: in a compiled training step XLA:CPU splits the scale and bias gradients' sums
    over tokens (b, n, d) -> (d) into a 32 x 32 reduce-window over both leading axes, which its
    YNNPACK fusion runs ~20x slower than a plain reduction (1.2 ms against 0.05 ms for
    (128, 49, 96)); on rows (b n, d) the window spans one axis and runs at the plain speed.
    The main job's DINO step: 2.7-2.9 % faster on one and two cores. Normalisation is over the
    last axis only, so the result is the same."""

    epsilon: float = 1e-6
    use_fast_variance: bool = False

    def __call__(self, x: jax.Array) -> jax.Array:
        if x.ndim <= 2:
            return super().__call__(x)
        return super().__call__(x.reshape(-1, x.shape[-1])).reshape(x.shape)


# timm's trunc_normal_(std=.02) truncates at +-2 absolute, i.e. +-100 sigma: plain normal.
trunc_normal_02 = nn.initializers.truncated_normal(stddev=0.02, lower=-100.0, upper=100.0)


class Dense(nn.Dense):
    """nn.Dense (same parameters, init and names) applied to its input flattened to 2-D.

    Why: on an input with several leading axes (tokens (b, n, d), ConvNeXt's (b, h, w, c)) the
    weight gradient contracts all of them at once, and XLA:CPU computes that as a transposed
    copy of the cotangent followed by an unfused dot: 8.8 ms instead of 3.0 ms for a
    (128, 49, 96) -> 384 layer on one core, where PyTorch takes 2.7 ms. On the flattened input
    it is one plain matmul. The reshapes are free (bitcasts), on every backend.
    The product is `simpool_jax.models.matmul.matmul`: bf16 products (and float32 ones inside
    `bf16_matmuls()`) go to its bf16 kernels path; nn.Dense's dot_general overrides are not used.
    """

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features),
                            self.param_dtype)
        bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
                if self.use_bias else None)
        rows, kernel, bias = self.promote_dtype(x.reshape(-1, x.shape[-1]), kernel, bias,
                                                dtype=self.dtype)
        return matmul(rows, kernel, bias, self.precision).reshape(*x.shape[:-1], self.features)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample, rescales the kept ones.

    Needs the 'dropout' rng when `deterministic` is False and rate > 0.
    """

    rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, deterministic: bool) -> jax.Array:
        if deterministic or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, shape)
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Linearly increasing stochastic-depth rates over `depth` blocks, as timm/DINO (0 -> rate)."""
    if depth == 1:
        return [0.0]
    return [rate * i / (depth - 1) for i in range(depth)]


class Mlp(nn.Module):
    """Linear -> exact GELU -> Linear, the transformer / ConvNeXt MLP (torch names fc1, fc2)."""

    hidden_dim: int
    out_dim: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = Dense(self.hidden_dim, kernel_init=trunc_normal_02, name="fc1")(x)
        x = gelu(x)
        return Dense(self.out_dim, kernel_init=trunc_normal_02, name="fc2")(x)


class PatchEmbed(nn.Module):
    """ViT patch embedding: a p x p conv with stride p, with nn.Conv's parameters and init
    (`kernel` (p, p, C, D) lecun-normal, `bias` (D,) zeros), computed as patches @ kernel.

    Same sum as the conv, but XLA:CPU computes the conv's weight gradient ~7x slower than the
    equivalent matmul's (GPU/TPU speed of the two forms not measured here). A remainder of the
    image that does not fill a patch is dropped, as the 'VALID' conv does.
    """

    width: int
    patch_size: int

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        p = self.patch_size
        b, h, w, c = images.shape
        gh, gw = h // p, w // p
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (p, p, c, self.width))
        bias = self.param("bias", nn.initializers.zeros, (self.width,))
        # One split per reshape: JAX infers the output sharding of a batch-sharded array under an
        # explicit-axes mesh for these, not for both splits at once.
        patches = images[:, :gh * p, :gw * p].reshape(b, gh, p, gw * p, c).reshape(b, gh, p, gw, p, c)
        patches = patches.transpose(0, 1, 3, 2, 4, 5).reshape(b, gh, gw, p * p * c)
        patches = patches.reshape(b * gh * gw, p * p * c)  # 2-D, see `Dense`; one merge per reshape
        return matmul(patches, kernel.reshape(p * p * c, self.width), bias).reshape(b, gh, gw, self.width)


class DepthwiseConv(nn.Module):
    """k x k depthwise conv, stride 1, zero 'same' padding, with nn.Conv's parameters
    (`kernel` (k, k, 1, C), `bias` (C,)), so checkpoints and the importer see an nn.Conv.

    On CPU it is computed as k*k shifted multiply-adds over the padded input: XLA:CPU sends a
    grouped conv to a kernel that is ~5x slower than PyTorch's for ConvNeXt's 7x7 (bench/dwconv.py),
    while the shifted form is one fused loop. On GPU/TPU the native grouped conv is used.
    """

    kernel_size: int = 7

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, k = x.shape[-1], self.kernel_size
        kernel = self.param("kernel", trunc_normal_02, (k, k, 1, c))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        if jax.default_backend() == "cpu":
            y = depthwise_conv_shifted(x, kernel)
        else:
            pad = ((k // 2, k // 2), (k // 2, k // 2))
            y = jax.lax.conv_general_dilated(x, kernel.astype(x.dtype), (1, 1), pad,
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                             feature_group_count=c)
        return y + bias.astype(y.dtype)


def depthwise_conv_shifted(x: jax.Array, kernel: jax.Array) -> jax.Array:
    """NHWC depthwise conv (stride 1, zero 'same' padding) as a sum of shifted, scaled copies."""
    kh, kw = kernel.shape[:2]
    h, w = x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    kernel = kernel.astype(x.dtype)
    out = padded[:, :h, :w, :] * kernel[0, 0, 0]
    for i in range(kh):
        for j in range(kw):
            if i or j:
                out = out + padded[:, i:i + h, j:j + w, :] * kernel[i, j, 0]
    return out


def _divide_by_one(x: jax.Array) -> jax.Array:
    # x / (1 + 0 x) is x for every finite x (IEEE: x / 1 == x exactly). XLA cannot simplify it
    # (0 x is not 0 for inf / nan) and counts a division as expensive, which it never duplicates.
    return x / (1.0 + 0.0 * x)


@jax.custom_vjp
def fusion_fence(x: jax.Array) -> jax.Array:
    """Identity that makes XLA materialise `x` and its cotangent instead of recomputing them.

    Why: XLA:CPU fuses cheap elementwise producers into every consumer, duplicating them. Down a
    residual stack that is quadratic: each weight-gradient matmul's transposed operand got its
    own fusion recomputing the residual cotangent through every later block (LayerNorm / BN
    backward terms included): 55 % of a ViT-S/16 gradient on one CPU core (batch 8: 5.9 s
    without, 2.6 s with a fence per block). A division per element at each block boundary,
    forward and backward, stops the chain there. Values are unchanged for finite inputs. Being
    a custom_vjp, it supports reverse mode (grad, vjp) and vmap, not forward mode (jax.jvp).
    """
    return _divide_by_one(x)


def _fusion_fence_fwd(x: jax.Array) -> tuple[jax.Array, None]:
    return _divide_by_one(x), None


def _fusion_fence_bwd(_: None, g: jax.Array) -> tuple[jax.Array]:
    return (_divide_by_one(g),)


fusion_fence.defvjp(_fusion_fence_fwd, _fusion_fence_bwd)
