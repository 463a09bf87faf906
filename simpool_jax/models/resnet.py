"""ResNet v1.5 (torchvision / timm layout: stride on the 3x3 conv), returning the layer4 grid.

BatchNorm keeps running statistics in the 'batch_stats' collection; torch's momentum 0.1 is
Flax's 0.9, eps 1e-5. Convolutions pad explicitly and symmetrically as torch does (Flax 'SAME'
pads asymmetrically for stride 2). Flax module names mirror torch's (`layer1_0.conv2`).
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax

from simpool_jax.models.base import BackboneOutput
from simpool_jax.models.layers import fusion_fence

RESNET_SIZES = {
    "resnet18": dict(stage_sizes=(2, 2, 2, 2), bottleneck=False),
    "resnet50": dict(stage_sizes=(3, 4, 6, 3), bottleneck=True),
}

_conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")  # kaiming, fan_out


def _conv(features: int, kernel: int, stride: int, name: str) -> nn.Conv:
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), (stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=False, kernel_init=_conv_init, name=name)


class ResidualBlock(nn.Module):
    """Basic (two 3x3) or bottleneck (1x1, 3x3 with the stride, 1x1 x4) residual block."""

    width: int
    stride: int
    bottleneck: bool

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        bn = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                               epsilon=1e-5)
        if self.bottleneck:
            out_dim = self.width * 4
            y = nn.relu(bn(name="bn1")(_conv(self.width, 1, 1, "conv1")(x)))
            y = nn.relu(bn(name="bn2")(_conv(self.width, 3, self.stride, "conv2")(y)))
            y = bn(name="bn3")(_conv(out_dim, 1, 1, "conv3")(y))
        else:
            out_dim = self.width
            y = nn.relu(bn(name="bn1")(_conv(self.width, 3, self.stride, "conv1")(x)))
            y = bn(name="bn2")(_conv(self.width, 3, 1, "conv2")(y))
        if self.stride != 1 or x.shape[-1] != out_dim:
            x = bn(name="downsample_bn")(_conv(out_dim, 1, self.stride, "downsample_conv")(x))
        return fusion_fence(nn.relu(x + y))


class ResNet(nn.Module):
    """ResNet-18/50 trunk: stem (7x7/2 conv, BN, ReLU, 3x3/2 max-pool) and four stages."""

    stage_sizes: tuple[int, ...] = (3, 4, 6, 3)
    bottleneck: bool = True
    width: int = 64

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False) -> BackboneOutput:
        x = _conv(self.width, 7, 2, "conv1")(images)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, name="bn1")(x)
        x = nn.relu(x)
        x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
        for stage, blocks in enumerate(self.stage_sizes):
            for block in range(blocks):
                stride = 2 if (stage > 0 and block == 0) else 1
                x = ResidualBlock(self.width * 2**stage, stride, self.bottleneck,
                                  name=f"layer{stage + 1}_{block}")(x, train)
        b, h, w, c = x.shape
        return BackboneOutput(tokens=x.reshape(b, h * w, c), grid=(h, w))


