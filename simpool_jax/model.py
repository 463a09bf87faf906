"""Model = backbone + (final norm, placed by recipe) + pooler + head, built from a config.

Where the official code puts the backbone's final LayerNorm relative to pooling (SIMPOOL.md §2):
DINO ViT: after pooling (blocks -> SimPool -> LN); supervised timm ViT: before pooling on all
tokens (fc_norm after pooling for GAP-like poolers); ConvNeXt: after; ResNet: none. Getting it
wrong moves features by >= 2.5, so it is explicit here and defaults per recipe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax

from simpool_jax.heads import DINOHead
from simpool_jax.models import backbone_family, get_backbone
from simpool_jax.models.layers import Dense, LayerNorm, trunc_normal_02
from simpool_jax.pooling import get_pooler

NORM_PLACEMENTS = ("before", "after", "none")
HEADS = ("none", "linear", "dino")
RECIPES = ("dino", "supervised")
# Poolers after which timm's ViT uses fc_norm (norm after pooling) instead of the final norm.
_TIMM_FC_NORM_POOLERS = ("gap", "max", "avgmax")


class Model(nn.Module):
    """Returns a dict: `tokens` (B, N, D) as the pooler saw them, `pooled`, `features` (the
    representation: pooled, after the final norm where the recipe has one), `attention` (B, N)
    when the pooler has one, `logits` with a head (classifier scores or DINO prototype scores).

    A pooler may return k vectors, pooled (B, k, D) (Slot Attention / k-means / OTK with
    readout='stack'). The linear head then scores each vector and takes the max over the k logits,
    as the paper reads out Slot Attention. `features` (for k-NN, the DINO head, extraction) is the
    elementwise max over the k normed vectors, i.e. what readout='max' would give, so every
    consumer of features still sees (B, D)."""

    backbone: str
    backbone_kwargs: Mapping[str, Any]
    pooling: str
    pooling_kwargs: Mapping[str, Any]
    norm: str
    head: str = "none"
    num_classes: int = 0
    head_kwargs: Mapping[str, Any] | None = None

    @nn.compact
    def __call__(self, images: jax.Array, train: bool = False, with_head: bool = True
                 ) -> dict[str, jax.Array]:
        """with_head=False stops at the features (DINO runs its head once on all crops)."""
        out = get_backbone(self.backbone, name="backbone", **self.backbone_kwargs)(images, train)
        tokens, cls = out.tokens, out.cls
        if self.norm == "before":
            norm = LayerNorm(name="norm")
            tokens = norm(tokens)
            cls = None if cls is None else norm(cls)
        pooled, attention = get_pooler(self.pooling, name="pool", **self.pooling_kwargs)(
            tokens, out.grid, cls=cls
        )
        features = LayerNorm(name="norm")(pooled) if self.norm == "after" else pooled
        vectors = features  # (B, D') or, for a k-vector pooler with readout='stack', (B, k, D)
        if pooled.ndim == 3:
            features = vectors.max(axis=1)
        result = {"tokens": tokens, "pooled": pooled, "features": features}
        if attention is not None:
            result["attention"] = attention
        if not with_head or self.head == "none":
            return result
        if self.head == "linear":
            # Per-vector classifier, max over the k logits (the paper's Slot read-out); for
            # (B, D') features the max runs over nothing.
            logits = Dense(self.num_classes, kernel_init=trunc_normal_02, name="head")(vectors)
            result["logits"] = logits.max(axis=1) if logits.ndim == 3 else logits
        elif self.head == "dino":
            result["logits"] = DINOHead(**(self.head_kwargs or {}), name="head")(features, train)
        return result


def default_norm(backbone: str, recipe: str, pooling: str) -> str:
    """The official final-norm placement for a backbone / recipe / pooler (module docstring)."""
    family = backbone_family(backbone)
    if family == "resnet":
        return "none"
    if family == "convnext":
        return "after"
    if recipe == "dino":
        return "before" if pooling == "cls" else "after"
    return "after" if pooling in _TIMM_FC_NORM_POOLERS else "before"


def default_posemb_resample(recipe: str, pooling: str) -> str:
    """DINO resizes by scale factor (the SimPool ViT even at 224, SIMPOOL.md §2.1); timm by size."""
    if recipe == "dino":
        return "dino" if pooling == "cls" else "dino_quirk"
    return "bicubic"


def build_model(config: Mapping[str, Any]) -> Model:
    """Model from a `config.model`-like mapping.

    Keys: backbone (registry name), pooling (registry name), recipe ('dino' | 'supervised'),
    optional backbone_kwargs, pooling_kwargs, norm ('auto' | 'before' | 'after' | 'none'),
    head ('none' | 'linear' | 'dino'), num_classes, head_kwargs. Unknown keys are errors.
    For ViTs the class token is created exactly when pooling == 'cls' (SimPool ViTs have none),
    and the position-embedding resampling defaults to the recipe's.
    """
    known = {"backbone", "pooling", "recipe", "backbone_kwargs", "pooling_kwargs", "norm",
             "head", "num_classes", "head_kwargs"}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"unknown model config keys {sorted(unknown)}; known: {sorted(known)}")
    recipe = config.get("recipe", "supervised")
    if recipe not in RECIPES:
        raise ValueError(f"recipe {recipe!r} not in {RECIPES}")
    backbone, pooling = config["backbone"], config["pooling"]
    # JSON / ConfigDict give lists where the modules expect (hashable) tuples.
    backbone_kwargs = {k: tuple(v) if isinstance(v, list) else v
                       for k, v in (config.get("backbone_kwargs") or {}).items()}
    if backbone_family(backbone) == "vit":
        backbone_kwargs.setdefault("class_token", pooling == "cls")
        backbone_kwargs.setdefault("posemb_resample", default_posemb_resample(recipe, pooling))
    norm = config.get("norm", "auto")
    if norm == "auto":
        norm = default_norm(backbone, recipe, pooling)
    if norm not in NORM_PLACEMENTS:
        raise ValueError(f"norm {norm!r} not in {NORM_PLACEMENTS + ('auto',)}")
    head = config.get("head", "none")
    if head not in HEADS:
        raise ValueError(f"head {head!r} not in {HEADS}")
    num_classes = int(config.get("num_classes", 0))
    if head == "linear" and num_classes <= 0:
        raise ValueError("head='linear' needs num_classes > 0")
    return Model(
        backbone=backbone,
        backbone_kwargs=backbone_kwargs,
        pooling=pooling,
        pooling_kwargs=dict(config.get("pooling_kwargs") or {}),
        norm=norm,
        head=head,
        num_classes=num_classes,
        head_kwargs=dict(config.get("head_kwargs") or {}),
    )
