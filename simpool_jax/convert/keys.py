"""Flax module paths of a `Model` -> torch module prefixes, per architecture and naming.

naming 'timm': the timm models (and the official supervised SimPool fork of timm);
naming 'dino': the official DINO / DINO-SimPool code (its ViT shares timm's backbone names).
Leaf names and layouts (weight/bias/running stats, transposes) are handled generically in
`simpool_jax.convert.state_dict`; only module names live here.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from simpool_jax.model import Model
from simpool_jax.models import backbone_family

NAMINGS = ("timm", "dino")

_POOL_PREFIX = {
    ("vit", "timm"): "gp.pool",
    ("resnet", "timm"): "global_pool.pool",
    ("convnext", "timm"): "head.global_pool.pool",
}
_LINEAR_HEAD = {"vit": "head", "resnet": "fc", "convnext": "head.fc"}
# Renames of single Flax module names where torch uses a Sequential index or another word.
_RENAMES = {
    "resnet": {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"},
    "convnext": {"stem_conv": "stem.0", "stem_norm": "stem.1",
                 "downsample_norm": "downsample.0", "downsample_conv": "downsample.1"},
    "vit": {"patch_embed": "patch_embed.proj"},
}


def dotted(parts: tuple[str, ...], renames: dict[str, str] | None = None) -> str:
    """Flax names 'blocks_3' / 'layer1_0' -> torch 'blocks.3' / 'layer1.0', joined by dots."""
    renames = renames or {}
    return ".".join(renames.get(p, re.sub(r"_(\d+)$", r".\1", p)) for p in parts)


def fb_convnext_key(parts: tuple[str, ...]) -> str:
    """ConvNeXt backbone path -> the names of facebookresearch/ConvNeXt, used by the DINO code:
    stem = downsample_layers.0.{0 conv, 1 LN}, downsampling = downsample_layers.s.{0 LN, 1 conv},
    blocks = stages.s.b.{dwconv, norm, pwconv1, pwconv2, gamma} (no 'blocks' level)."""
    if parts[0] in ("stem_conv", "stem_norm"):
        return f"downsample_layers.0.{0 if parts[0] == 'stem_conv' else 1}"
    stage = parts[0].removeprefix("stages_")
    if parts[1] in ("downsample_norm", "downsample_conv"):
        return f"downsample_layers.{stage}.{0 if parts[1] == 'downsample_norm' else 1}"
    block = parts[1].removeprefix("blocks_")
    inner = {("conv_dw",): "dwconv", ("norm",): "norm", ("mlp", "fc1"): "pwconv1",
             ("mlp", "fc2"): "pwconv2", (): ""}[parts[2:]]
    return f"stages.{stage}.{block}" + (f".{inner}" if inner else "")


def dino_head_key(parts: tuple[str, ...], use_bn: bool, nlayers: int) -> str:
    """DINOHead: Flax linear_i / bn_i -> torch `head.mlp.<index>` of its nn.Sequential.

    Without BN the Sequential is [Linear, GELU]*(n-1) + [Linear] (Linear i at 2i); with BN
    [Linear, BN, GELU]*(n-1) + [Linear] (Linear i at 3i, BN i at 3i + 1); with one layer `mlp`
    is the Linear itself. The weight-normed last layer's leaves sit on the head module.
    """
    if not parts:
        return "head"
    if nlayers == 1:
        return "head.mlp"
    kind, index = parts[0].rsplit("_", 1)
    stride = 3 if use_bn else 2
    return f"head.mlp.{stride * int(index) + (1 if kind == 'bn' else 0)}"


def module_key_fn(model: Model, naming: str) -> Callable[[tuple[str, ...]], str]:
    """The `module_key` function for `variables_from_state_dict` of this model."""
    if naming not in NAMINGS:
        raise ValueError(f"naming {naming!r} not in {NAMINGS}")
    family = backbone_family(model.backbone)

    def key(path: tuple[str, ...]) -> str:
        top, rest = path[0], path[1:]
        if top == "backbone":
            if naming == "dino" and family == "convnext":
                return fb_convnext_key(rest)
            return dotted(rest, _RENAMES[family])
        if top == "norm":
            if naming == "timm" and family == "convnext":
                return "head.norm"
            if naming == "timm" and family == "vit" and model.norm == "after":
                return "fc_norm"
            return "norm"
        if top == "pool":
            prefix = "simpool" if naming == "dino" else _POOL_PREFIX[(family, naming)]
            return ".".join([prefix, *rest])
        if top == "head" and model.head == "dino":
            kw = model.head_kwargs or {}
            return dino_head_key(rest, kw.get("use_bn", False), kw.get("nlayers", 3))
        if top == "head":
            return _LINEAR_HEAD[family]
        raise KeyError(f"no torch name for Flax module path {path}")

    return key
