"""The PyTorch side of the benchmarks: timm backbones + PyTorch SimPool (+ heads) as nn.Modules.

The math is not restated here: SimPool from the equations (`torch_simpool`), the official
DINO-SimPool ViT forward (`dino_vit_forward`) and DINO's projection head (`TorchDINOHead`) come
from tests/reference.py, which the parity tests check against our models. This module wraps them
in trainable modules and renames their state_dicts to what
`simpool_jax.convert.variables_from_torch` expects (prefixes from the converter's own
`module_key_fn`), so that each benchmark runs both frameworks on the same weights.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping
from typing import Any

import common  # noqa: F401  (puts the repo root on sys.path: tests.reference)
import torch
from torch import nn

from simpool_jax.convert.keys import module_key_fn
from simpool_jax.convert.torch_env import import_timm
from simpool_jax.model import Model
from tests.reference import TorchDINOHead, dino_vit_forward, torch_simpool


class TorchSimPool(nn.Module):
    """SimPool's parameters as a module (official names); the math is `torch_simpool`."""

    def __init__(self, dim: int, gamma: float | None, use_beta: bool = False):
        super().__init__()
        self.gamma, self.use_beta = gamma, use_beta
        self.norm_patches = nn.LayerNorm(dim, eps=1e-6)
        self.wq = nn.Linear(dim, dim, bias=False)
        self.wk = nn.Linear(dim, dim, bias=False)
        if use_beta:
            self.beta = nn.Parameter(torch.zeros(1))

    def weights(self) -> dict[str, torch.Tensor]:
        """{'norm_patches.weight', ..., ['beta']}: the dict `torch_simpool` takes."""
        return dict(self.named_parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, D)
        return torch_simpool(x, self.weights(), gamma=self.gamma, use_beta=self.use_beta)[0]


def _renamed(state_dict: dict, prefixes: dict[str, str], drop: tuple[str, ...] = ()) -> dict:
    """Keys 'module.rest' -> prefixes['module'] + '.rest' ('' strips the module); `drop` skipped."""
    out = {}
    for key, value in state_dict.items():
        if key.startswith(drop):
            continue
        module, rest = key.split(".", 1)
        out[f"{prefixes[module]}.{rest}" if prefixes[module] else rest] = value
    return out


class SimPoolClassifier(nn.Module):
    """The supervised SimPool recipe in PyTorch: timm `forward_features` (a ViT's final norm
    included), SimPool, the recipe's norm after pooling ('after' only) and an optional linear head.

    ViTs are built with `class_token=False` (ours has none with SimPool) and, when the input size
    differs from the model's, `dynamic_img_size=True` (timm then resamples its position
    embedding every call, as ours does; timm antialiases when downsampling, ours does not)."""

    def __init__(self, timm_name: str, gamma: float | None, norm: str, image_size: int,
                 num_classes: int = 0, **timm_kwargs):
        super().__init__()
        kwargs = dict(pretrained=False, num_classes=0, global_pool="", **timm_kwargs)
        self.is_vit = timm_name.startswith("vit")
        if self.is_vit:
            kwargs.setdefault("class_token", False)
            if image_size != kwargs.get("img_size", 224):
                kwargs.update(dynamic_img_size=True)
        self.backbone = import_timm().create_model(timm_name, **kwargs)
        dim = self.backbone.num_features
        self.pool = TorchSimPool(dim, gamma)
        self.norm = nn.LayerNorm(dim, eps=1e-6) if norm == "after" else nn.Identity()
        self.head = nn.Linear(dim, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.backbone.forward_features(x)  # ViT: (B, N, D), final norm applied
        if f.ndim == 4:
            f = f.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, HW, C), row-major
        return self.head(self.norm(self.pool(f)))

    def state_dict_for_ours(self, model: Model) -> dict:
        """The tensors under the timm names our converter expects for `model`."""
        key = module_key_fn(model, "timm")
        # timm ConvNeXt's own head.norm is unused here: `self.norm` plays its part.
        drop = () if self.is_vit else ("backbone.head.",)
        return _renamed(self.state_dict(), {"backbone": "", "pool": key(("pool",)),
                                            "norm": key(("norm",)), "head": key(("head",))}, drop)


class DinoViT(nn.Module):
    """The official DINO-SimPool ViT (`dino_vit_forward` on a timm ViT without class token) with
    DINO's head, called on a list of crop batches as DINO's MultiCropWrapper: consecutive crops of
    one resolution are concatenated into one backbone call, the head runs once on all features.
    weight_g of the head's last layer starts at 1 and is frozen with norm_last_layer, as the
    official DINOHead."""

    def __init__(self, timm_name: str, gamma: float | None, use_beta: bool,
                 head_kwargs: Mapping[str, Any], **timm_kwargs):
        super().__init__()
        self.vit = import_timm().create_model(timm_name, pretrained=False, num_classes=0,
                                              global_pool="", class_token=False, **timm_kwargs)
        dim = self.vit.num_features
        self.gamma, self.use_beta = gamma, use_beta
        self.pool = TorchSimPool(dim, gamma, use_beta)
        self.norm_last_layer = head_kwargs.get("norm_last_layer", True)
        with warnings.catch_warnings():  # the official head's (deprecated) weight_norm
            warnings.filterwarnings("ignore", ".*weight_norm.*", FutureWarning)
            self.head = TorchDINOHead(dim, head_kwargs["out_dim"], head_kwargs.get("use_bn", False),
                                      nlayers=head_kwargs.get("nlayers", 3),
                                      hidden=head_kwargs["hidden_dim"],
                                      bottleneck=head_kwargs["bottleneck_dim"])
        with torch.no_grad():
            self.head.last_layer.weight_g.fill_(1.0)
        self.head.last_layer.weight_g.requires_grad = not self.norm_last_layer

    def forward(self, crops: list[torch.Tensor]) -> torch.Tensor:
        features = []
        for _, group in itertools.groupby(crops, key=lambda c: c.shape[-1]):
            images = torch.cat(list(group))
            features.append(dino_vit_forward(self.vit, self.pool.weights(), images, self.gamma,
                                             self.use_beta)[0])
        return self.head(torch.cat(features))

    def state_dict_for_ours(self) -> dict:
        """The tensors under the official DINO names (naming 'dino' of our converter)."""
        drop = ("head.last_layer.weight_g",) if self.norm_last_layer else ()
        return _renamed(self.state_dict(), {"vit": "", "pool": "simpool", "head": "head"}, drop)


def timm_vit(backbone: str, backbone_kwargs: Mapping[str, Any]) -> tuple[str, dict]:
    """(timm model name, `create_model` overrides) of our ViT `backbone` with `backbone_kwargs`
    (e.g. 'vit_tiny' with width 96, patch 4, posemb_grid (7, 7) -> embed_dim 96, img_size 28)."""
    kw = dict(backbone_kwargs)
    patch, grid = kw.pop("patch_size", 16), tuple(kw.pop("posemb_grid", (14, 14)))
    if grid[0] != grid[1]:
        raise ValueError(f"the timm reference needs a square posemb_grid, got {grid}")
    out = dict(patch_size=patch, img_size=grid[0] * patch)
    for ours, theirs in (("width", "embed_dim"), ("depth", "depth"), ("num_heads", "num_heads"),
                         ("mlp_ratio", "mlp_ratio"), ("drop_path_rate", "drop_path_rate")):
        if ours in kw:
            out[theirs] = kw.pop(ours)
    if kw:
        raise ValueError(f"backbone_kwargs {sorted(kw)} have no timm equivalent here")
    return f"{backbone}_patch16_224", out


def torch_device(jax_platform: str) -> torch.device:
    """CUDA when jax runs on a GPU (an error if this torch has no CUDA), else the CPU."""
    if jax_platform != "gpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("jax runs on a GPU but this torch has no CUDA: install a CUDA torch "
                           "or leave the reference out (--no-torch where the bench has it)")
    return torch.device("cuda")


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work (timings of asynchronous GPU calls); no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
