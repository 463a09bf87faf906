"""Independent references for the tests, written from the equations, not from our code.

numpy SimPool (SIMPOOL.md §1.3), a PyTorch SimPool for model-level parity with timm backbones,
and a helper that gives a timm model non-trivial random weights and BatchNorm statistics.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def np_layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * scale + bias


def np_simpool(x, ln_scale, ln_bias, wq, wk, gamma=None, beta=None, min_over="batch", eps=1e-6):
    """SimPool in float64 numpy. wq, wk in torch (out, in) layout. Returns (pooled, attention)."""
    x = np.asarray(x, np.float64)
    d = x.shape[-1]
    u0 = x.mean(axis=1)                               # GAP of the raw tokens
    z = np_layer_norm(x, ln_scale, ln_bias)           # keys and values
    q = u0 @ wq.T
    k = z @ wk.T
    s = np.einsum("bd,bnd->bn", q, k) / np.sqrt(d)
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    if gamma is None:
        return np.einsum("bn,bnd->bd", a, z), a
    m = z.min() if min_over == "batch" else z.min(axis=(1, 2), keepdims=True)
    v = z - m + eps
    u = np.einsum("bn,bnd->bd", a, v**gamma) ** (1.0 / gamma)
    if beta is not None:
        u = u + beta
    return u, a


def torch_simpool(x, params: dict, gamma=None, use_beta=False):
    """The same in PyTorch (float32), params keyed as the official module's state_dict."""

    d = x.shape[-1]
    u0 = x.mean(dim=1)
    z = F.layer_norm(x, (d,), params["norm_patches.weight"], params["norm_patches.bias"], 1e-6)
    q = u0 @ params["wq.weight"].T
    k = z @ params["wk.weight"].T
    a = torch.softmax(torch.einsum("bd,bnd->bn", q, k) * d**-0.5, dim=-1)
    if gamma is None:
        return torch.einsum("bn,bnd->bd", a, z), a
    v = z - z.min() + 1e-6
    u = torch.einsum("bn,bnd->bd", a, v.pow(gamma)).pow(1.0 / gamma)
    if use_beta:
        u = u + params["beta"]
    return u, a


def random_simpool_params(d: int, seed: int, use_beta: bool = False) -> dict:
    """Random SimPool weights in the official state_dict naming (torch tensors)."""

    g = torch.Generator().manual_seed(seed)
    params = {
        "norm_patches.weight": 1 + 0.2 * torch.randn(d, generator=g),
        "norm_patches.bias": 0.2 * torch.randn(d, generator=g),
        "wq.weight": torch.randn(d, d, generator=g) * d**-0.5,
        "wk.weight": torch.randn(d, d, generator=g) * d**-0.5,
    }
    if use_beta:
        params["beta"] = torch.tensor([0.3])
    return params


def seeded(seed: int, build, *args, **kwargs):
    """build(*args, **kwargs) with torch's global generator seeded inside `fork_rng` (the caller's
    stream is left alone). timm and torch.nn layers draw their initial weights from that global
    generator: built this way, the same seed gives the same module in every run, so a parity
    figure measured once is the figure CI checks."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return build(*args, **kwargs)


def random_timm_model(name: str, seed: int, **kwargs):
    """timm.create_model(name, pretrained=False, **kwargs), `seeded`, with `randomize_timm_model`
    weights."""
    from simpool_jax.convert.torch_env import import_timm

    model = seeded(seed, import_timm().create_model, name, pretrained=False, **kwargs)
    randomize_timm_model(model, seed)
    return model


def randomize_timm_model(model, seed: int, calibration_size: int = 64) -> None:
    """Make every parameter and buffer of `model` informative (in place).

    Fresh timm models have zero biases, unit norms, layer scale 1e-6 and unit BN statistics, so a
    port that mixes them up could still pass. We perturb all of them, set ConvNeXt layer scales
    to O(0.1-1), and calibrate BatchNorm running statistics on a random batch. The last BN of each
    ResNet block gets a gain of ~0.25 (timm zero-initialises it) so that, as in trained ResNets,
    activations stay O(1) through the residual sums and an absolute tolerance stays meaningful.
    """

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.copy_(0.1 + 0.9 * torch.rand(p.shape, generator=g))
            elif p.ndim == 1 and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.ndim == 1 or "pos_embed" in name or "cls_token" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
        for m in model.modules():
            if hasattr(m, "zero_init_last"):  # timm ResNet BasicBlock / Bottleneck
                last_bn = m.bn3 if hasattr(m, "bn3") else m.bn2
                last_bn.weight.mul_(0.25)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        if bns:
            for m in bns:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the calibration batch
            model.train()
            model.forward_features(torch.randn(2, 3, calibration_size, calibration_size, generator=g))
        model.eval()


def dino_vit_forward(vit, pool_params: dict, images, gamma, use_beta):
    """The official DINO-SimPool ViT forward (SIMPOOL.md §2.1) on a timm ViT built without class
    token: patch embedding, position embedding resampled by F.interpolate with scale factor
    (n + 0.1) / side (even at the training size), blocks, SimPool, final LayerNorm.
    Differentiable (bench/dino_step.py trains through it). Returns (features, attention)."""

    x = vit.patch_embed.proj(images).flatten(2).transpose(1, 2)
    side = int(vit.pos_embed.shape[1] ** 0.5)
    grid = vit.pos_embed.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    ph, pw = vit.patch_embed.proj.stride
    gh, gw = images.shape[2] // ph, images.shape[3] // pw
    pos = F.interpolate(grid, scale_factor=((gh + 0.1) / side, (gw + 0.1) / side), mode="bicubic")
    x = vit.blocks(x + pos.permute(0, 2, 3, 1).reshape(1, gh * gw, -1))
    pooled, attention = torch_simpool(x, pool_params, gamma=gamma, use_beta=use_beta)
    return vit.norm(pooled), attention


def dino_vit_reference(vit, pool_params: dict, images, gamma, use_beta):
    """`dino_vit_forward` without autograd."""

    with torch.no_grad():
        return dino_vit_forward(vit, pool_params, images, gamma, use_beta)


def randomize_dino_head(head, norm_last_layer: bool, seed: int):
    """Give a TorchDINOHead a trained-looking gain (1 when norm_last_layer) and BN statistics.

    The linear weights are redrawn from `seed` too (torch's default U(+-1/sqrt(fan_in)) range):
    torch.nn.Linear initialises them from the unseeded global generator, which made the heads,
    and every parity figure through them, differ from run to run.
    """

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, torch.nn.Linear):
                bound = m.in_features ** -0.5
                weight = m.weight_v if hasattr(m, "weight_v") else m.weight  # weight-normed last layer
                weight.copy_(bound * (2 * torch.rand(weight.shape, generator=g) - 1))
                if m.bias is not None:
                    m.bias.copy_(bound * (2 * torch.rand(m.bias.shape, generator=g) - 1))
        gain = head.last_layer.weight_g
        gain.copy_(torch.ones_like(gain) if norm_last_layer
                   else 0.5 + torch.rand(gain.shape, generator=g))
        for m in head.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
    return head.eval()


class TorchDINOHead(torch.nn.Module):
    """DINO's projection head as facebookresearch/dino defines it (weight-normed last layer)."""

    def __init__(self, in_dim, out_dim, use_bn, nlayers=3, hidden=64, bottleneck=16):
        super().__init__()
        layers_ = [torch.nn.Linear(in_dim, hidden)]
        for _ in range(nlayers - 2):
            layers_ += [torch.nn.BatchNorm1d(hidden)] if use_bn else []
            layers_ += [torch.nn.GELU(), torch.nn.Linear(hidden, hidden)]
        layers_ += [torch.nn.BatchNorm1d(hidden)] if use_bn else []
        layers_ += [torch.nn.GELU(), torch.nn.Linear(hidden, bottleneck)]
        self.mlp = torch.nn.Sequential(*layers_)
        self.last_layer = torch.nn.utils.weight_norm(torch.nn.Linear(bottleneck, out_dim, bias=False))

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))
