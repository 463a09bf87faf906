"""What model a PyTorch state_dict holds: backbone, key naming, recipe, pooler, γ, head.

Shapes and key names decide the architecture; γ is not stored in any checkpoint (SIMPOOL.md
§1.1), so it comes from an override, the file's `args`, the file name, or the official default
(1.25 ViT, 2.0 CNN) — in that order, and the last two are announced loudly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from simpool_jax.models.convnext import CONVNEXT_SIZES
from simpool_jax.models.resnet import RESNET_SIZES
from simpool_jax.models.vit import VIT_SIZES

DEFAULT_GAMMA = {"vit": 1.25, "resnet": 2.0, "convnext": 2.0}
_POOL_PREFIXES = ("simpool.", "gp.pool.", "global_pool.pool.", "head.global_pool.pool.")
_LINEAR_HEADS = {"vit": "head", "resnet": "fc", "convnext": "head.fc"}


def _count(state_dict: dict, pattern: str) -> int:
    """Number of distinct integers captured by `pattern` over the keys."""
    return len({m.group(1) for k in state_dict if (m := re.match(pattern, k))})


def _backbone(sd: dict[str, np.ndarray]) -> tuple[str, str, dict]:
    """(registry name, family, backbone kwargs) from key shapes."""
    if "patch_embed.proj.weight" in sd:
        width, _, patch, _ = sd["patch_embed.proj.weight"].shape
        depth = _count(sd, r"blocks\.(\d+)\.")
        for name, size in VIT_SIZES.items():
            if size["width"] == width and size["depth"] == depth:
                return name, "vit", {"patch_size": int(patch)}
        raise ValueError(f"unsupported ViT: width {width}, depth {depth}")
    if "layer1.0.conv1.weight" in sd:
        stages = tuple(_count(sd, rf"layer{i}\.(\d+)\.") for i in range(1, 5))
        bottleneck = "layer1.0.conv3.weight" in sd
        for name, size in RESNET_SIZES.items():
            if size["stage_sizes"] == stages and size["bottleneck"] == bottleneck:
                return name, "resnet", {}
        raise ValueError(f"unsupported ResNet: stages {stages}, bottleneck {bottleneck}")
    fb = "downsample_layers.0.0.weight" in sd
    if fb or "stem.0.weight" in sd:
        block = r"stages\.{s}\.(\d+)\." if fb else r"stages\.{s}\.blocks\.(\d+)\."
        depths = tuple(_count(sd, block.format(s=s)) for s in range(4))
        dim0 = sd["downsample_layers.0.0.weight" if fb else "stem.0.weight"].shape[0]
        for name, size in CONVNEXT_SIZES.items():
            if size["depths"] == depths and size["dims"][0] == dim0:
                return name, "convnext", {}
        raise ValueError(f"unsupported ConvNeXt: depths {depths}, stem width {dim0}")
    raise ValueError("cannot recognise the architecture: no ViT, ResNet or ConvNeXt keys "
                     f"(first keys: {sorted(sd)[:8]})")


def _dino_head(sd: dict[str, np.ndarray]) -> dict[str, Any]:
    """DINOHead kwargs from head.mlp.* and head.last_layer.* shapes."""
    out_dim, bottleneck = sd["head.last_layer.weight_v"].shape
    linears = sorted(int(m.group(1)) for k in sd if (m := re.match(r"head\.mlp\.(\d+)\.weight$", k))
                     and sd[k].ndim == 2)
    use_bn = any(k.startswith("head.mlp.") and k.endswith("running_mean") for k in sd)
    nlayers = len(linears) or 1
    hidden = sd[f"head.mlp.{linears[0]}.weight"].shape[0] if linears else bottleneck
    return dict(out_dim=int(out_dim), use_bn=use_bn, nlayers=nlayers, hidden_dim=int(hidden),
                bottleneck_dim=int(bottleneck))


def infer_model_config(
    sd: dict[str, np.ndarray], container: str, args: dict, filename: str,
    recipe: str | None = None, gamma: Any = "auto", arch: str | None = None,
) -> tuple[dict, list[str], str]:
    """(model config for build_model, notes to show the user, key naming 'timm' | 'dino').

    gamma: 'auto' (detect), None (no γ) or a float. May edit `sd` (drops a stray β, a legacy
    CLS slot, a weight-norm gain of exactly 1) and says so in the notes.
    """
    notes: list[str] = []
    backbone, family, backbone_kwargs = _backbone(sd)
    if arch is not None and arch != backbone:
        notes.append(f"--arch {arch} overrides the detected {backbone}")
        backbone = arch
    has_dino_keys = any(k.startswith(("simpool.", "head.mlp", "head.last_layer",
                                      "downsample_layers.")) for k in sd)
    naming = "dino" if container == "dino" or has_dino_keys else "timm"
    recipe = recipe or ("dino" if naming == "dino" else "supervised")
    pool_prefix = next((p for p in _POOL_PREFIXES if f"{p}wq.weight" in sd), None)
    if pool_prefix:
        pooling = "simpool"
    elif family == "vit" and "cls_token" in sd:
        pooling = "cls"
    else:
        pooling = "gap"
    config: dict[str, Any] = dict(backbone=backbone, backbone_kwargs=backbone_kwargs,
                                  pooling=pooling, recipe=recipe)
    if family == "vit" and pooling != "cls" and "pos_embed" in sd and sd["pos_embed"].shape[1] == 197:
        sd["pos_embed"] = sd["pos_embed"][:, 1:]
        notes.append("pos_embed has 197 entries but no cls_token: pre-release SimPool ViT, "
                     "dropped the unused slot 0")
    if pooling == "simpool":
        config["pooling_kwargs"] = _simpool_kwargs(sd, pool_prefix, family, naming, args,
                                                   filename, gamma, notes)
    if "head.last_layer.weight_v" in sd:
        head = _dino_head(sd)
        gain = sd.get("head.last_layer.weight_g")
        head["norm_last_layer"] = gain is None or bool(np.all(gain == 1.0))
        if gain is not None and head["norm_last_layer"]:
            del sd["head.last_layer.weight_g"]  # exactly 1: a cosine last layer, nothing to keep
        config.update(head="dino", head_kwargs=head)
    elif f"{_LINEAR_HEADS[family]}.weight" in sd:
        config.update(head="linear", num_classes=int(sd[f"{_LINEAR_HEADS[family]}.weight"].shape[0]))
    return config, notes, naming


def _simpool_kwargs(sd, prefix, family, naming, args, filename, gamma, notes) -> dict[str, Any]:
    """γ, β for SimPool: override > args.gamma > file name > official default (loud)."""
    source = "--gamma"
    if gamma == "auto":
        if "gamma" in args:
            gamma, source = args["gamma"], "the checkpoint's args.gamma"
        elif "no_gamma" in Path(filename).name:
            gamma, source = None, "the file name ('no_gamma')"
        else:
            gamma, source = DEFAULT_GAMMA[family], "NOTHING IN THE FILE"
            notes.append(f"WARNING: gamma is not stored in checkpoints and this file has no args; "
                         f"using the official default gamma={gamma} for {family}. Pass --gamma "
                         "G or --gamma none if the model was trained otherwise.")
        if gamma is None and family == "convnext" and naming == "dino":
            gamma = DEFAULT_GAMMA["convnext"]
            notes.append("WARNING: DINO ConvNeXt 'no gamma': the official main_dino.py/eval_knn.py "
                         "build ConvNeXt through timm, which drops gamma=None, so the published "
                         "model was trained and evaluated with gamma=2.0 (SIMPOOL.md §9.2). Using "
                         "2.0; pass --gamma none for the literal no-gamma pooling.")
    if isinstance(gamma, str):
        gamma = None if gamma.lower() == "none" else float(gamma)
    notes.append(f"SimPool gamma={gamma} (from {source})")
    beta_key = f"{prefix}beta"
    use_beta = beta_key in sd
    if use_beta and gamma is None:
        del sd[beta_key]
        notes.append(f"WARNING: ignored a stray {beta_key}: beta only acts with gamma "
                     "(official DINO builds the ViT teacher with a beta even for no-gamma runs)")
        use_beta = False
    return dict(gamma=gamma, use_beta=use_beta)
