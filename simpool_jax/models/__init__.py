"""Backbones: `(images NHWC, train) -> BackboneOutput(tokens (B, N, D), grid (h, w), cls)`.

Registered by name so configs pick them with `config.model.backbone`; keyword arguments override
the registered sizes (tests build 2-block models this way).
"""

from __future__ import annotations

import flax.linen as nn

from simpool_jax.models.base import BackboneOutput
from simpool_jax.models.convnext import CONVNEXT_SIZES, ConvNeXt
from simpool_jax.models.resnet import RESNET_SIZES, ResNet
from simpool_jax.models.vit import VIT_SIZES, ViT

BACKBONES: dict[str, tuple[type[nn.Module], dict]] = {
    **{name: (ViT, size) for name, size in VIT_SIZES.items()},
    **{name: (ResNet, size) for name, size in RESNET_SIZES.items()},
    **{name: (ConvNeXt, size) for name, size in CONVNEXT_SIZES.items()},
}


def backbone_family(name: str) -> str:
    """'vit', 'resnet' or 'convnext': decides norm placement and weight key names."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return {ViT: "vit", ResNet: "resnet", ConvNeXt: "convnext"}[BACKBONES[name][0]]


def get_backbone(backbone: str, **kwargs) -> nn.Module:
    """Build the backbone registered as `backbone`; `kwargs` override its size or options."""
    backbone_family(backbone)
    cls, size = BACKBONES[backbone]
    return cls(**{**size, **kwargs})


__all__ = ["BACKBONES", "BackboneOutput", "backbone_family", "get_backbone", "ViT", "ResNet", "ConvNeXt"]
