"""ConvNeXt (Liu et al. 2022; timm layout), returning the stage-4 grid before the final norm.

Block: 7x7 depthwise conv -> LayerNorm (channels-last, eps 1e-6) -> Linear 4C -> exact GELU ->
Linear C -> layer scale gamma -> stochastic depth -> residual. Stem: 4x4/4 conv + LN;
downsampling: LN + 2x2/2 conv. Flax names mirror timm's (`stages_2.blocks_5.conv_dw`); the DINO
code's names (`downsample_layers`, `dwconv`, `pwconv1`) are mapped by `simpool_jax.convert`.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from simpool_jax.models.base import BackboneOutput
from simpool_jax.models.layers import (
    DepthwiseConv, DropPath, LayerNorm, Mlp, drop_path_rates, trunc_normal_02,
)

CONVNEXT_SIZES = {
    "convnext_tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "convnext_small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "convnext_base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
}


class ConvNeXtBlock(nn.Module):
    """One ConvNeXt block (module docstring)."""

    layer_scale_init: float = 1e-6
    drop_path: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        c = x.shape[-1]
        y = DepthwiseConv(7, name="conv_dw")(x)
        y = Mlp(4 * c, c, name="mlp")(LayerNorm(name="norm")(y))
        if self.layer_scale_init > 0:
            gamma = self.param("gamma", nn.initializers.constant(self.layer_scale_init), (c,))
            y = y * gamma
        return x + DropPath(self.drop_path)(y, not train)


class ConvNeXtStage(nn.Module):
    """Optional downsampling (LN + 2x2/2 conv) followed by `depth` blocks."""

    dim: int
    depth: int
    downsample: bool
    drop_paths: tuple[float, ...]
    layer_scale_init: float

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if self.downsample:
            x = LayerNorm(name="downsample_norm")(x)
            x = nn.Conv(self.dim, (2, 2), (2, 2), padding="VALID", kernel_init=trunc_normal_02,
                        name="downsample_conv")(x)
        for i in range(self.depth):
            x = ConvNeXtBlock(self.layer_scale_init, self.drop_paths[i], name=f"blocks_{i}")(x, train)
        return x


class ConvNeXt(nn.Module):
    """ConvNeXt trunk; stochastic depth rises linearly over all blocks (0 -> drop_path_rate)."""

    depths: tuple[int, ...] = (3, 3, 27, 3)
    dims: tuple[int, ...] = (96, 192, 384, 768)
    drop_path_rate: float = 0.0
    layer_scale_init: float = 1e-6

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> BackboneOutput:
        x = nn.Conv(self.dims[0], (4, 4), (4, 4), padding="VALID", kernel_init=trunc_normal_02,
                    name="stem_conv")(images)
        x = LayerNorm(name="stem_norm")(x)
        rates = drop_path_rates(self.drop_path_rate, sum(self.depths))
        start = 0
        for s, (depth, dim) in enumerate(zip(self.depths, self.dims)):
            x = ConvNeXtStage(dim, depth, s > 0, tuple(rates[start:start + depth]),
                              self.layer_scale_init, name=f"stages_{s}")(x, train)
            start += depth
        b, h, w, c = x.shape
        return BackboneOutput(tokens=x.reshape(b, h * w, c), grid=(h, w))


