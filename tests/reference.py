"""Independent references for the tests, written from the equations, not from our code.

numpy SimPool (SIMPOOL.md §1.3), a PyTorch SimPool for model-level parity with timm backbones,
and a helper that gives a timm model non-trivial random weights and BatchNorm statistics.
"""

from __future__ import annotations

import numpy as np


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
    import torch
    import torch.nn.functional as F

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
    import torch

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


def randomize_timm_model(model, seed: int, calibration_size: int = 64) -> None:
    """Make every parameter and buffer of `model` informative (in place).

    Fresh timm models have zero biases, unit norms, layer scale 1e-6 and unit BN statistics, so a
    port that mixes them up could still pass. We perturb all of them, set ConvNeXt layer scales
    to O(0.1-1), and calibrate BatchNorm running statistics on a random batch. The last BN of each
    ResNet block gets a gain of ~0.25 (timm zero-initialises it) so that, as in trained ResNets,
    activations stay O(1) through the residual sums and an absolute tolerance stays meaningful.
    """
    import torch

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
            model(torch.randn(2, 3, calibration_size, calibration_size, generator=g))
        model.eval()
