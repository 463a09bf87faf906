"""Our backbones + poolers + heads against timm's PyTorch models with the same random weights.

The weights go through `simpool_jax.convert` (the library's strict torch -> flax mapping). Baseline
models (CLS / GAP / fc_norm) are timm end to end; SimPool models are timm's backbone followed by a
PyTorch SimPool written from the equations (tests/reference.py) with the official norm placement.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference import (
    TorchDINOHead,
    dino_vit_reference,
    random_simpool_params,
    randomize_dino_head,
    random_timm_model,
    seeded,
    torch_simpool,
)

from simpool_jax import convert
from simpool_jax.model import build_model
from simpool_jax.models import layers

torch.set_num_threads(2)

FEATURE_ATOL = 1e-4
ATTENTION_ATOL = 2e-5


def _images(size: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _ours(config: dict, state_dict: dict, naming: str = "timm"):
    model = build_model(config)
    return model, convert.variables_from_torch(model, state_dict, naming=naming)


def _apply(model, variables, images: torch.Tensor, **kwargs) -> dict:
    out = model.apply(variables, jnp.asarray(images.permute(0, 2, 3, 1).numpy()), **kwargs)
    return jax.tree.map(np.asarray, out)


def _tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """NCHW -> (B, H*W, C), row-major like our backbones."""
    return feature_map.flatten(2).transpose(1, 2)


def _close(ours, ref, atol=FEATURE_ATOL, what="", rtol=0.0):
    """Assert |ours - ref| <= atol + rtol |ref|; print max |diff| (`pytest -s`, quoted in README).

    Features, logits and attention use a pure absolute bound; the raw CNN token grids (sums of
    thousands of conv terms, values up to ~20 here) also get rtol 1e-5, the fp32 noise floor.
    """
    ref = ref.detach().numpy() if isinstance(ref, torch.Tensor) else ref
    assert ours.shape == ref.shape
    print(f"\n  {what:<10} max|diff| {np.abs(ours - ref).max():.2e}  (max|ref| {np.abs(ref).max():.2f})", end="")
    np.testing.assert_allclose(ours, ref, atol=atol, rtol=rtol)


# (timm name, our name, timm kwargs, our backbone kwargs, image size, baseline pooling)
BACKBONES = [
    ("vit_tiny_patch16_224", "vit_tiny", {}, {}, 224, "cls"),
    pytest.param("vit_small_patch16_224", "vit_small", {}, {}, 224, "cls", marks=pytest.mark.slow),
    ("resnet18", "resnet18", {}, {}, 96, "gap"),
    pytest.param("resnet50", "resnet50", {}, {}, 224, "gap", marks=pytest.mark.slow),
    ("convnext_tiny", "convnext_tiny", {"depths": (1, 1, 2, 1)}, {"depths": (1, 1, 2, 1)}, 96, "gap"),
    pytest.param("convnext_small", "convnext_small", {}, {}, 224, "gap", marks=pytest.mark.slow),
]


@pytest.mark.parametrize("timm_name,ours_name,timm_kw,ours_kw,size,pooling", BACKBONES)
def test_timm_baseline_models(timm_name, ours_name, timm_kw, ours_kw, size, pooling):
    """Tokens, pre-logits features and logits of timm's own CLS / GAP models."""
    ref_model = random_timm_model(timm_name, seed=1, num_classes=10, **timm_kw)
    model, variables = _ours(
        dict(backbone=ours_name, backbone_kwargs=ours_kw, pooling=pooling, recipe="supervised",
             head="linear", num_classes=10),
        ref_model.state_dict(),
    )
    images = _images(size)
    with torch.no_grad():
        tokens = ref_model.forward_features(images)
        features = ref_model.forward_head(tokens, pre_logits=True)
        logits = ref_model.forward_head(tokens)
    out = _apply(model, variables, images)
    _close(out["tokens"], tokens[:, 1:] if pooling == "cls" else _tokens(tokens), what="tokens",
           rtol=1e-5)
    _close(out["features"], features, what="features")
    _close(out["logits"], logits, what="logits")


def test_timm_vit_gap_uses_fc_norm_after_pooling():
    ref_model = random_timm_model("vit_tiny_patch16_224", seed=2, num_classes=10, global_pool="avg",
                      class_token=False, depth=2)
    model, variables = _ours(
        dict(backbone="vit_tiny", backbone_kwargs={"depth": 2}, pooling="gap",
             recipe="supervised", head="linear", num_classes=10),
        ref_model.state_dict(),
    )
    images = _images(224)
    with torch.no_grad():
        features = ref_model.forward_head(ref_model.forward_features(images), pre_logits=True)
    _close(_apply(model, variables, images)["features"], features, what="features")


def _timm_simpool_reference(family, ref_model, pool_params, head, images, gamma):
    """Official supervised wiring (SIMPOOL.md §2.4) on timm's backbone, in PyTorch."""
    with torch.no_grad():
        tokens = ref_model.forward_features(images)  # ViT: final norm applied to all tokens
        if family != "vit":
            tokens = _tokens(tokens)
        pooled, attention = torch_simpool(tokens, pool_params, gamma=gamma)
        features = pooled
        if family == "convnext":
            norm = ref_model.head.norm
            features = F.layer_norm(pooled, pooled.shape[-1:], norm.weight, norm.bias, 1e-6)
        return tokens, features, attention, head(features)


SIMPOOL_MODELS = [
    ("vit", "vit_tiny_patch16_224", "vit_tiny", {}, {}, 224, 1.25, "gp.pool", "head"),
    ("vit", "vit_tiny_patch16_224", "vit_tiny", {}, {}, 224, None, "gp.pool", "head"),
    pytest.param("vit", "vit_small_patch16_224", "vit_small", {}, {}, 224, 1.25, "gp.pool", "head",
                 marks=pytest.mark.slow),
    ("resnet", "resnet18", "resnet18", {}, {}, 96, 2.0, "global_pool.pool", "fc"),
    pytest.param("resnet", "resnet50", "resnet50", {}, {}, 224, 2.0, "global_pool.pool", "fc",
                 marks=pytest.mark.slow),
    ("convnext", "convnext_tiny", "convnext_tiny", {"depths": (1, 1, 2, 1)},
     {"depths": (1, 1, 2, 1)}, 96, 2.0, "head.global_pool.pool", "head.fc"),
    pytest.param("convnext", "convnext_small", "convnext_small", {}, {}, 224, 2.0,
                 "head.global_pool.pool", "head.fc", marks=pytest.mark.slow),
]


def _simpool_case(family, timm_name, ours_name, timm_kw, ours_kw, gamma, pool_key, head_key):
    extra = {"class_token": False, "global_pool": ""} if family == "vit" else {"global_pool": ""}
    ref_model = random_timm_model(timm_name, seed=3, num_classes=0, **extra, **timm_kw)
    dim = ref_model.num_features
    pool_params = random_simpool_params(dim, seed=4)
    head = seeded(8, torch.nn.Linear, dim, 10)
    state_dict = dict(ref_model.state_dict())
    state_dict.update({f"{pool_key}.{k}": v for k, v in pool_params.items()})
    state_dict.update({f"{head_key}.{k}": v for k, v in head.state_dict().items()})
    model, variables = _ours(
        dict(backbone=ours_name, backbone_kwargs=ours_kw, pooling="simpool",
             pooling_kwargs={"gamma": gamma}, recipe="supervised", head="linear", num_classes=10),
        state_dict,
    )
    return ref_model, pool_params, head, model, variables


@pytest.mark.parametrize(
    "family,timm_name,ours_name,timm_kw,ours_kw,size,gamma,pool_key,head_key", SIMPOOL_MODELS)
def test_supervised_simpool_models(family, timm_name, ours_name, timm_kw, ours_kw, size, gamma,
                                   pool_key, head_key):
    ref_model, pool_params, head, model, variables = _simpool_case(
        family, timm_name, ours_name, timm_kw, ours_kw, gamma, pool_key, head_key)
    images = _images(size, batch=3)
    tokens, features, attention, logits = _timm_simpool_reference(
        family, ref_model, pool_params, head, images, gamma)
    out = _apply(model, variables, images)
    _close(out["tokens"], tokens, what="tokens", rtol=1e-5)
    _close(out["features"], features, what="features")
    _close(out["attention"], attention, atol=ATTENTION_ATOL, what="attention")
    _close(out["logits"], logits, what="logits")


def test_parity_detects_tanh_gelu_and_wrong_norm_placement(monkeypatch):
    """The bounds of test_supervised_simpool_models catch the classic porting mistakes.

    A tanh GELU is the subtle one: on this ViT-Ti it moves the pooled features by only ~1e-4
    (at the features bound, so that check alone would catch it on some weight draws and not
    others) but the tokens by ~2e-4, twice their bound; the parity test checks both.
    """
    case = SIMPOOL_MODELS[0]
    ref_model, pool_params, head, model, variables = _simpool_case(
        *case[:5], *case[6:])
    images = _images(224, batch=3)
    tokens, features, _, _ = _timm_simpool_reference("vit", ref_model, pool_params, head, images,
                                                     1.25)
    wrong_norm = _apply(model.clone(norm="after"), variables, images)["features"]
    assert np.abs(wrong_norm - features.numpy()).max() > 100 * FEATURE_ATOL
    monkeypatch.setattr(layers, "gelu", lambda x: jax.nn.gelu(x, approximate=True))
    with pytest.raises(AssertionError, match="Mismatched elements"):
        _close(_apply(model, variables, images)["tokens"], tokens, what="tokens", rtol=1e-5)


@pytest.mark.parametrize("size", [224, 96])
@pytest.mark.parametrize("use_bn,norm_last_layer", [(False, True), (True, False)])
def test_dino_vit_simpool_with_head(size, use_bn, norm_last_layer):
    """DINO wiring (SIMPOOL.md §2.1): pos-embed resampled by scale factor even at 224, blocks,
    SimPool with gamma and beta, final LN after pooling, DINO head; DINO key names."""
    ref_model = random_timm_model("vit_tiny_patch16_224", seed=5, num_classes=0, class_token=False,
                      global_pool="", depth=2)
    pool_params = random_simpool_params(192, seed=6, use_beta=True)
    head = randomize_dino_head(TorchDINOHead(192, 32, use_bn), norm_last_layer, seed=7)
    state_dict = {f"backbone.{k}": v for k, v in ref_model.state_dict().items()}
    state_dict.update({f"backbone.simpool.{k}": v for k, v in pool_params.items()})
    state_dict.update({f"head.{k}": v for k, v in head.state_dict().items()})
    if norm_last_layer:
        state_dict.pop("head.last_layer.weight_g")
    state_dict = {k.removeprefix("backbone."): v for k, v in state_dict.items()}
    model, variables = _ours(
        dict(backbone="vit_tiny", backbone_kwargs={"depth": 2}, pooling="simpool",
             pooling_kwargs={"gamma": 1.25, "use_beta": True}, recipe="dino", head="dino",
             head_kwargs=dict(out_dim=32, use_bn=use_bn, norm_last_layer=norm_last_layer,
                              hidden_dim=64, bottleneck_dim=16)),
        state_dict, naming="dino",
    )
    images = _images(size, batch=3)
    features, attention = dino_vit_reference(ref_model, pool_params, images, 1.25, True)
    with torch.no_grad():
        logits = head(features)
    out = _apply(model, variables, images)
    _close(out["features"], features, what="features")
    _close(out["attention"], attention, atol=ATTENTION_ATOL, what="attention")
    _close(out["logits"], logits, what="logits")
