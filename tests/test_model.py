"""Model assembly: every backbone x pooler builds with the right shapes; bad configs are clear
errors; a jitted forward with the batch sharded over 8 (fake CPU) devices equals one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from simpool_jax.model import build_model
from simpool_jax.models import BACKBONES, backbone_family

POOLINGS = {"simpool": {"gamma": 1.25}, "gap": {}, "cls": {}}
WIDTH = {"vit_tiny": 192, "vit_small": 384, "vit_base": 768, "resnet18": 512, "resnet50": 2048,
         "convnext_tiny": 768, "convnext_small": 768, "convnext_base": 1024}


def _combinations():
    for backbone in sorted(BACKBONES):
        for pooling in POOLINGS:
            if pooling == "cls" and backbone_family(backbone) != "vit":
                continue
            # The recipe changes only the ViT wiring (norm placement, pos-embed resampling).
            recipes = ("supervised", "dino") if backbone_family(backbone) == "vit" else ("dino",)
            for recipe in recipes:
                yield backbone, pooling, recipe


@pytest.mark.parametrize("backbone,pooling,recipe", list(_combinations()))
def test_output_shapes(backbone, pooling, recipe):
    head = "dino" if recipe == "dino" else "linear"
    model = build_model(dict(backbone=backbone, pooling=pooling, recipe=recipe,
                             pooling_kwargs=POOLINGS[pooling], head=head, num_classes=7,
                             head_kwargs={"out_dim": 7} if head == "dino" else {}))
    for size in (224, 96):
        images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
        out, _ = jax.eval_shape(model.init_with_output, jax.random.PRNGKey(0), images)
        n = (size // 16) ** 2 if backbone_family(backbone) == "vit" else (size // 32) ** 2
        d = WIDTH[backbone]
        assert out["tokens"].shape == (2, n, d)
        assert out["pooled"].shape == out["features"].shape == (2, d)
        assert out["logits"].shape == (2, 7)
        assert ("attention" in out) == (pooling == "simpool")
        if pooling == "simpool":
            assert out["attention"].shape == (2, n)


@pytest.mark.parametrize("config,message", [
    (dict(backbone="resnet18", pooling="cls"), "class token"),
    (dict(backbone="resnet19", pooling="gap"), "unknown backbone"),
    (dict(backbone="resnet18", pooling="avg"), "unknown pooling"),
    (dict(backbone="resnet18", pooling="gap", pooling_kwarg={}), "unknown model config keys"),
    (dict(backbone="resnet18", pooling="gap", head="linear"), "num_classes"),
    (dict(backbone="resnet18", pooling="gap", norm="middle"), "norm"),
    (dict(backbone="resnet18", pooling="gap", recipe="mae"), "recipe"),
])
def test_bad_config_is_a_clear_error(config, message):
    with pytest.raises(ValueError, match=message):
        model = build_model(config)
        jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, 64, 64, 3)))


TINY = {
    "vit_tiny": {"depth": 2},
    "resnet18": {"stage_sizes": (1, 1, 1, 1)},
    "convnext_tiny": {"depths": (1, 1, 1, 1)},
}


@pytest.mark.parametrize("backbone,pooling", [
    ("vit_tiny", "simpool"), ("vit_tiny", "cls"), ("vit_tiny", "gap"),
    ("resnet18", "simpool"), ("convnext_tiny", "simpool"), ("convnext_tiny", "gap"),
])
def test_sharded_forward_equals_single_device(backbone, pooling):
    assert jax.device_count() == 8, "tests expect XLA_FLAGS=--xla_force_host_platform_device_count=8"
    model = build_model(dict(backbone=backbone, backbone_kwargs=TINY[backbone], pooling=pooling,
                             pooling_kwargs=POOLINGS[pooling], recipe="dino", head="dino",
                             head_kwargs=dict(out_dim=16, hidden_dim=32, bottleneck_dim=8)))
    images = jax.random.normal(jax.random.PRNGKey(1), (16, 64, 64, 3))
    variables = model.init(jax.random.PRNGKey(0), images)
    # Perturb every variable so BN statistics and norms are not trivial.
    leaves, tree = jax.tree.flatten(variables)
    keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
    variables = jax.tree.unflatten(tree, [
        jnp.abs(leaf + 0.1 * jax.random.normal(k, leaf.shape)) if leaf.ndim == 1 else leaf
        for leaf, k in zip(leaves, keys)])
    forward = jax.jit(model.apply)
    single = forward(variables, images)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated = jax.device_put(variables, NamedSharding(mesh, P()))
    sharded_images = jax.device_put(images, NamedSharding(mesh, P("data")))
    sharded = forward(replicated, sharded_images)
    assert sharded["features"].sharding.spec in (P("data"), P("data", None))
    for name in single:
        np.testing.assert_allclose(sharded[name], single[name], atol=1e-5, rtol=1e-5, err_msg=name)


def test_sharded_batchnorm_training_uses_global_batch_statistics():
    model = build_model(dict(backbone="resnet18", backbone_kwargs=TINY["resnet18"],
                             pooling="simpool", pooling_kwargs={"gamma": 2.0}))
    images = jax.random.normal(jax.random.PRNGKey(1), (16, 64, 64, 3))
    variables = model.init(jax.random.PRNGKey(0), images)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    out_single, stats_single = forward(variables, images)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    out_sharded, stats_sharded = forward(jax.device_put(variables, NamedSharding(mesh, P())),
                                         jax.device_put(images, NamedSharding(mesh, P("data"))))
    np.testing.assert_allclose(out_sharded["features"], out_single["features"], atol=1e-5, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(stats_sharded), jax.tree.leaves(stats_single)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm", ["after", "before"])
def test_k_vector_pooler_classifies_each_vector_and_takes_the_max_logit(norm):
    """Slot Attention with readout='stack' (B, k, D): logits = max_k (LN?(u_k) W + b), the paper's
    read-out; features = max_k LN?(u_k). numpy reference from those formulas."""
    model = build_model(dict(backbone="vit_tiny", pooling="slot", norm=norm,
                             backbone_kwargs=dict(depth=1, width=16, num_heads=2, patch_size=8),
                             pooling_kwargs=dict(readout="stack", num_slots=3), head="linear",
                             num_classes=5))
    images = jax.random.normal(jax.random.PRNGKey(1), (4, 32, 32, 3))
    variables = model.init(jax.random.PRNGKey(0), images)
    rng = np.random.default_rng(0)
    head = {"kernel": rng.standard_normal((16, 5)), "bias": rng.standard_normal(5)}
    params = dict(variables["params"], head=jax.tree.map(jnp.asarray, head))
    if norm == "after":
        params["norm"] = {"scale": jnp.asarray(1 + 0.2 * rng.standard_normal(16)),
                          "bias": jnp.asarray(0.5 * rng.standard_normal(16))}
    out = model.apply({**variables, "params": params}, images)
    u = np.asarray(out["pooled"], np.float64)
    assert u.shape == (4, 3, 16)
    if norm == "after":
        ln = params["norm"]
        mu, var = u.mean(-1, keepdims=True), u.var(-1, keepdims=True)
        u = (u - mu) / np.sqrt(var + 1e-6) * np.asarray(ln["scale"]) + np.asarray(ln["bias"])
    per_slot = u @ head["kernel"] + head["bias"]  # (B, k, classes)
    np.testing.assert_allclose(out["logits"], per_slot.max(1), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(out["features"], u.max(1), atol=1e-4, rtol=1e-4)
    # The max of the logits is not the logits of the max feature: the read-out order matters.
    assert np.abs(per_slot.max(1) - (u.max(1) @ head["kernel"] + head["bias"])).max() > 1e-2
