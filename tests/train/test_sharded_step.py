"""One supervised train step on 8 (fake CPU) devices, data- and fsdp-sharded, equals one device."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simpool_jax.model import build_model
from simpool_jax.parallel import global_batch, make_mesh
from simpool_jax.train.optim import make_optimizer
from simpool_jax.train.state import create_state
from simpool_jax.train.supervised import make_train_step


# A small ViT compiles fast; BatchNorm under sharding is covered by tests/test_model.py.
MODEL = dict(backbone="vit_tiny", pooling="simpool", pooling_kwargs={"gamma": 1.25},
             backbone_kwargs=dict(depth=2, width=64, num_heads=2, patch_size=8, posemb_grid=(4, 4)),
             recipe="supervised", head="linear", num_classes=5)


def _setup(mesh, ema=0.0, compute_dtype="float32"):
    model = build_model(MODEL)
    config = dict(name="adamw", lr=1e-2, weight_decay=0.05, warmup_steps=1, clip_grad_norm=1.0)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((2, 32, 32, 3)))["params"]
    tx, lr = make_optimizer(config, 10, abstract)
    state, shardings = create_state(model, tx, (32, 32, 3), mesh, jax.random.PRNGKey(0), ema=bool(ema))
    step = jax.jit(make_train_step(model, tx, lr, 5, label_smoothing=0.1, ema_decay=ema,
                                   compute_dtype=compute_dtype), donate_argnums=0)
    return state, step


def _batches():
    rng = np.random.default_rng(0)
    return [{"image": rng.standard_normal((16, 32, 32, 3)).astype(np.float32),
             "label": rng.integers(0, 5, 16).astype(np.int32)} for _ in range(2)]


def _run(mesh, ema=0.0):
    state, step = _setup(mesh, ema)
    losses = []
    for batch in _batches():
        state, metrics = step(state, global_batch(mesh, batch), jax.random.PRNGKey(1))
        losses.append(float(metrics["loss"]))
    return jax.device_get(state), losses


@pytest.fixture(scope="module")
def single_device_run():
    return _run(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)), ema=0.9)


@pytest.mark.parametrize("axes", [(("data", 8),), (("data", 2), ("fsdp", 4))])
def test_sharded_step_equals_single_device(axes, single_device_run):
    single_state, single_losses = single_device_run
    mesh = make_mesh(axes)
    state, losses = _run(mesh, ema=0.9)
    np.testing.assert_allclose(losses, single_losses, rtol=1e-5)
    for name in ("params", "batch_stats", "ema_params", "opt"):
        for a, b in zip(jax.tree.leaves(state[name]), jax.tree.leaves(single_state[name])):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=name)


def test_fsdp_shards_large_parameters():
    state, _ = _setup(make_mesh((("data", 2), ("fsdp", 4))))
    kernel = state["params"]["backbone"]["blocks_0"]["mlp"]["fc1"]["kernel"]  # (64, 256)
    assert kernel.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")
    assert kernel.addressable_shards[0].data.shape == (64, 64)
    moment = state["opt"][1][0].mu["backbone"]["blocks_0"]["mlp"]["fc1"]["kernel"]
    assert moment.sharding.spec == jax.sharding.PartitionSpec(None, "fsdp")
    assert state["params"]["pool"]["norm_patches"]["scale"].sharding.spec == jax.sharding.PartitionSpec()


def test_soft_labels_from_mixup_are_the_targets():
    """With 'labels' (mixup / cutmix output) in the batch, the loss is CE against them."""
    state, step = _setup(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)))
    batch = _batches()[0]
    soft = np.random.default_rng(3).dirichlet(np.ones(5), 16).astype(np.float32)
    params = jax.device_get(state["params"])
    _, metrics = step(state, dict(batch, labels=soft), jax.random.PRNGKey(1))
    logits = np.asarray(build_model(MODEL).apply({"params": params}, batch["image"])["logits"],
                        np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    np.testing.assert_allclose(metrics["loss"], -(soft * log_p).sum(1).mean(), rtol=1e-5)


def test_bf16_compute_keeps_fp32_params_and_close_loss():
    """Both bf16 modes (bf16 copies; bf16 products only) train float32 params to a loss within
    bf16 accuracy of float32's."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    batch = global_batch(mesh, _batches()[0])
    losses = {}
    for dtype in ("float32", "bfloat16", "bfloat16_matmul"):
        state, step = _setup(mesh, compute_dtype=dtype)
        state, metrics = step(state, batch, jax.random.PRNGKey(1))
        losses[dtype] = float(metrics["loss"])
        assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state["params"]))
    for dtype in ("bfloat16", "bfloat16_matmul"):
        assert losses[dtype] != losses["float32"]
        assert abs(losses[dtype] - losses["float32"]) < 0.05 * losses["float32"], dtype
    with pytest.raises(ValueError, match="compute_dtype='float16'"):
        _setup(mesh, compute_dtype="float16")
