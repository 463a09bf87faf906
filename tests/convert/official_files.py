"""Checkpoints in the official containers and key layouts (SIMPOOL.md §7), built with torch from
random weights, together with the PyTorch forward that the official code would run on them."""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from reference import (
    TorchDINOHead,
    dino_vit_reference,
    random_simpool_params,
    randomize_dino_head,
    random_timm_model,
    torch_simpool,
)




@dataclass
class OfficialFile:
    """A checkpoint object to torch.save, and reference forwards for the state_dicts in it."""

    obj: dict
    reference: dict[str, Callable]  # entry name -> images NCHW -> dict(features, attention, logits)


def _prefixed(prefix: str, state: dict) -> dict:
    return {f"{prefix}{k}": v for k, v in state.items()}


def dino_vit(name: str, gamma: float | None, stray_beta: bool = False, seed: int = 0) -> OfficialFile:
    """DINO-SimPool ViT: {'student', 'teacher', 'args', ...}; the teacher's keys `backbone.*` /
    `head.*`, the DDP student's `module.backbone.*` / `module.head.*`."""
    obj = {"epoch": 100, "optimizer": {}, "dino_loss": {"center": torch.zeros(1, 32)},
           "args": argparse.Namespace(arch=name, gamma=gamma, mode="simpool", out_dim=32)}
    reference = {}
    for entry, prefix, offset in (("teacher", "", 0), ("student", "module.", 10)):
        vit = random_timm_model(f"{name}_patch16_224", seed + offset, num_classes=0, class_token=False,
                    global_pool="")
        dim = vit.num_features
        use_beta = gamma is not None or stray_beta
        pool = random_simpool_params(dim, seed + offset + 1, use_beta=use_beta)
        head = randomize_dino_head(TorchDINOHead(dim, 32, use_bn=False), True, seed + offset + 2)
        state = _prefixed("backbone.", {**vit.state_dict(), **_prefixed("simpool.", pool)})
        state.update(_prefixed("head.", head.state_dict()))
        obj[entry] = _prefixed(prefix, state)

        def forward(images, vit=vit, pool=pool, head=head):
            features, attention = dino_vit_reference(vit, pool, images, gamma, gamma is not None)
            with torch.no_grad():
                return dict(features=features, attention=attention, logits=head(features))

        reference[entry] = forward
    return OfficialFile(obj, reference)


def dino_vit_official_cls(name: str, seed: int = 0) -> OfficialFile:
    """DINO ViT in 'official' mode: CLS token, pos_embed (1, 197, D), features = norm(x)[:, 0];
    the position embedding is resampled only when the grid differs from 14 x 14."""
    vit = random_timm_model(f"{name}_patch16_224", seed, num_classes=0)
    obj = {"teacher": _prefixed("backbone.", vit.state_dict()),
           "args": argparse.Namespace(arch=name, mode="official")}

    def forward(images):
        with torch.no_grad():
            x = vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
            gh, gw = images.shape[2] // 16, images.shape[3] // 16
            pos = vit.pos_embed[:, 1:]
            if (gh, gw) != (14, 14):
                grid = pos.reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
                pos = F.interpolate(grid, scale_factor=((gh + 0.1) / 14, (gw + 0.1) / 14),
                                    mode="bicubic").permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
            cls = vit.cls_token + vit.pos_embed[:, :1]
            x = torch.cat([cls.expand(len(x), -1, -1), x + pos], dim=1)
            return dict(features=vit.norm(vit.blocks(x))[:, 0])

    return OfficialFile(obj, {"teacher": forward})


def _fb_convnext_names(state: dict) -> dict:
    """timm ConvNeXt names -> facebookresearch/ConvNeXt names (as in the DINO code)."""
    rules = [(r"^stem\.(\d)\.", r"downsample_layers.0.\1."),
             (r"^stages\.(\d)\.downsample\.(\d)\.", r"downsample_layers.\1.\2."),
             (r"^stages\.(\d)\.blocks\.(\d+)\.", r"stages.\1.\2."),
             (r"\.conv_dw\.", ".dwconv."), (r"\.mlp\.fc1\.", ".pwconv1."),
             (r"\.mlp\.fc2\.", ".pwconv2."), (r"^head\.norm\.", "norm.")]
    renamed = {}
    for key, value in state.items():
        for pattern, replacement in rules:
            key = re.sub(pattern, replacement, key)
        renamed[key] = value
    return renamed


def dino_cnn(name: str, args_gamma: float | None, legacy_names: bool = False,
             seed: int = 0) -> OfficialFile:
    """DINO-SimPool ResNet (teacher DDP-wrapped, BN head) or ConvNeXt (FB names, LN after pooling).
    The reference uses gamma 2.0 for ConvNeXt whatever args say (timm drops gamma=None)."""
    convnext = name.startswith("convnext")
    model = random_timm_model(name, seed, num_classes=0, global_pool="")
    dim = model.num_features
    pool = random_simpool_params(dim, seed + 1)
    head = randomize_dino_head(TorchDINOHead(dim, 32, use_bn=not convnext), True, seed + 2)
    backbone = dict(model.state_dict())
    if convnext:
        backbone = _fb_convnext_names(backbone)
    pool_keys = _prefixed("simpool.", pool)
    if legacy_names:  # pre-release names (SIMPOOL.md §7.4)
        pool_keys = (_prefixed("attn.", pool) if not convnext else
                     {k.removeprefix("simpool.") if ".norm_patches." in f".{k}" else k: v
                      for k, v in pool_keys.items()})
        if convnext:
            backbone = {re.sub(r"^norm\.", "norm_output.", k): v for k, v in backbone.items()}
    prefix = "backbone." if convnext else "module.backbone."
    state = _prefixed(prefix, {**backbone, **pool_keys})
    state.update(_prefixed("head." if convnext else "module.head.", head.state_dict()))
    obj = {"teacher": state, "student": state,
           "args": argparse.Namespace(arch=name, gamma=args_gamma, mode="simpool")}
    gamma = 2.0 if convnext else args_gamma

    def forward(images):
        with torch.no_grad():
            tokens = model.forward_features(images).flatten(2).transpose(1, 2)
            features, attention = torch_simpool(tokens, pool, gamma=gamma)
            if convnext:
                norm = model.head.norm
                features = F.layer_norm(features, (dim,), norm.weight, norm.bias, 1e-6)
            return dict(features=features, attention=attention, logits=head(features))

    return OfficialFile(obj, {"teacher": forward})


def supervised(name: str, gamma: float | None, ema: bool, split_bn: bool = False,
               container: str = "timm", seed: int = 0) -> OfficialFile:
    """The official supervised fork of timm: SimPool at gp.pool (ViT) / global_pool.pool (ResNet),
    ViT final norm before pooling; {'state_dict', 'state_dict_ema', 'arch', 'args', ...} or, for
    container='bare', a cleaned state_dict. split_bn adds SplitBN aux_bn copies to every BN."""
    vit = name.startswith("vit")
    entries = ("state_dict", "state_dict_ema") if ema else ("state_dict",)
    obj = {"epoch": 99, "arch": name, "version": 2, "metric": 70.0, "optimizer": {},
           "args": argparse.Namespace(model=name, gamma=gamma, gp="simpool")}
    reference = {}
    for offset, entry in enumerate(entries):
        extra = {"class_token": False} if vit else {}
        model = random_timm_model(name, seed + 10 * offset, num_classes=5, global_pool="", **extra)
        dim = model.num_features
        pool = random_simpool_params(dim, seed + 10 * offset + 1)
        state = {**model.state_dict(), **_prefixed("gp.pool." if vit else "global_pool.pool.", pool)}
        if split_bn:
            for key in [k for k in state if re.search(r"bn\d\.|downsample\.1\.", k)]:
                module, leaf = key.rsplit(".", 1)
                for i in (0, 1):
                    state[f"{module}.aux_bn.{i}.{leaf}"] = torch.randn_like(state[key].float())
        obj[entry] = state

        def forward(images, model=model, pool=pool):
            with torch.no_grad():
                tokens = model.forward_features(images)
                if not vit:
                    tokens = tokens.flatten(2).transpose(1, 2)
                features, attention = torch_simpool(tokens, pool, gamma=gamma)
                head = model.head if vit else model.fc
                return dict(features=features, attention=attention, logits=head(features))

        reference[entry] = forward
    if container == "bare":
        return OfficialFile(obj[entries[-1]], {None: reference[entries[-1]]})
    return OfficialFile(obj, reference)
