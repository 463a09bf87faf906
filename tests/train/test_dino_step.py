"""A whole DINO step: teacher EMA by its formula, and 8 sharded devices == 1 device."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from simpool_jax.heads import DINOHead
from simpool_jax.model import build_model
from simpool_jax.parallel import global_batch, make_mesh
from simpool_jax.train.dino import DinoOptimizer, make_dino_step
from simpool_jax.train.optim import warmup_cosine
from simpool_jax.train.state import create_sharded

CONFIG = ml_collections.ConfigDict(dict(dino=dict(
    student_temp=0.1, teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=2,
    center_momentum=0.9, clip_grad=3.0, freeze_last_layer_epochs=1, momentum_teacher=0.9)))


def _setup(mesh, compute_dtype="float32"):
    # No head BN and no beta: both give parameters whose exact gradient is 0 (a bias before BN,
    # beta before the final LN), where Adam turns reduction-order noise (~1e-9) into +-lr steps,
    # so 8 devices and 1 would differ there by design. Sharded BN is tested in tests/test_model.py.
    # (The key part of the qkv bias also has an exact-zero gradient — softmax ignores a constant
    # added to every key — hence atol 1e-5 below rather than the fp32 noise floor.)
    model = build_model(dict(
        backbone="vit_tiny", backbone_kwargs=dict(depth=1, width=32, num_heads=2, patch_size=4,
                                                  posemb_grid=(4, 4)),
        pooling="simpool", pooling_kwargs=dict(gamma=1.25), recipe="dino",
        head="dino", head_kwargs=dict(out_dim=16, hidden_dim=32, bottleneck_dim=8)))
    optimizer = DinoOptimizer("adamw")

    def init(rng):
        variables = model.init(rng, jnp.zeros((2, 16, 16, 3)))
        p, s = variables["params"], variables.get("batch_stats", {})
        # A teacher that differs from the student makes the EMA check meaningful.
        teacher = jax.tree.map(lambda x: x * 0.5, p)
        return {"params": p, "batch_stats": s, "teacher_params": teacher, "teacher_batch_stats": s,
                "opt": optimizer.init(p), "center": jnp.zeros((1, 16)), "step": jnp.zeros((), jnp.int32)}

    schedules = {"lr": warmup_cosine(1e-3, 10, 1), "wd": warmup_cosine(0.04, 10, 0, 0.4),
                 "momentum": warmup_cosine(0.9, 10, 0, 1.0)}
    step = make_dino_step(model, model, DINOHead(**model.head_kwargs), optimizer, schedules,
                          CONFIG, steps_per_epoch=1, compute_dtype=compute_dtype)
    state, _ = create_sharded(init, mesh, jax.random.PRNGKey(0))
    return state, jax.jit(step)


def _batches():
    rng = np.random.default_rng(0)
    return [{"global": rng.standard_normal((8, 2, 16, 16, 3)).astype(np.float32),
             "local": rng.standard_normal((8, 3, 8, 8, 3)).astype(np.float32)} for _ in range(3)]


def _run(mesh):
    state, step = _setup(mesh)
    history = []
    for batch in _batches():
        before = jax.device_get(state)
        state, metrics = step(state, global_batch(mesh, batch), jax.random.PRNGKey(1))
        history.append((before, jax.device_get(state), jax.device_get(metrics)))
    return history


@pytest.fixture(scope="module")
def single():
    return _run(jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",)))


def test_teacher_is_ema_of_student_and_last_layer_frozen_in_epoch_0(single):
    before, after, metrics = single[0]
    mom = float(metrics["momentum"])
    assert mom == pytest.approx(0.9)
    for t0, s1, t1 in zip(jax.tree.leaves(before["teacher_params"]), jax.tree.leaves(after["params"]),
                          jax.tree.leaves(after["teacher_params"])):
        np.testing.assert_allclose(t1, mom * t0 + (1 - mom) * s1, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(after["params"]["head"]["last_layer_v"],
                                  before["params"]["head"]["last_layer_v"])
    assert float(metrics["teacher_temp"]) == pytest.approx(0.04)
    # Epoch 1 (steps_per_epoch=1): the last layer trains, the temperature has warmed up.
    _, after2, metrics2 = single[1]
    assert np.abs(after2["params"]["head"]["last_layer_v"] - after["params"]["head"]["last_layer_v"]).max() > 0
    assert float(metrics2["teacher_temp"]) == pytest.approx(0.07)


def test_eight_devices_equal_one(single):
    sharded = _run(make_mesh((("data", 8),)))
    for (_, a, ma), (_, b, mb) in zip(sharded, single):
        np.testing.assert_allclose(ma["loss"], mb["loss"], rtol=1e-5)
        for name in ("params", "teacher_params", "center", "batch_stats", "opt"):
            for x, y in zip(jax.tree.leaves(a[name]), jax.tree.leaves(b[name])):
                np.testing.assert_allclose(x, y, rtol=2e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("compute_dtype", ["bfloat16", "bfloat16_matmul"])
def test_bf16_step_keeps_float32_state_and_is_close_to_float32(compute_dtype):
    """Either bf16 mode: the step computes in bf16 (its loss differs from float32's) but within
    bf16 accuracy (1 %), and the state keeps its tree and float32 leaves."""
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))
    batch = global_batch(mesh, _batches()[0])
    results = {}
    for dtype in ("float32", compute_dtype):
        state, step = _setup(mesh, dtype)
        results[dtype] = step(state, batch, jax.random.PRNGKey(1))
        # Same tree in and out: a changed structure would recompile the step every other call.
        assert jax.tree.structure(results[dtype][0]) == jax.tree.structure(state)
    (state32, m32), (state16, m16) = results["float32"], results[compute_dtype]
    assert all(leaf.dtype in (jnp.float32, jnp.int32) for leaf in jax.tree.leaves(state16))
    loss32, loss16 = float(m32["loss"]), float(m16["loss"])
    assert loss16 != loss32 and abs(loss16 - loss32) < 0.01 * loss32
    np.testing.assert_allclose(m16["grad_norm"], m32["grad_norm"], rtol=0.05)
    np.testing.assert_allclose(state16["center"], state32["center"], rtol=0.02, atol=1e-3)


def test_bf16_matmul_step_on_a_data_fsdp_mesh_equals_one_device():
    """compute_dtype='bfloat16_matmul' on a 4 x 2 data x fsdp mesh (the bf16 products' custom
    gradient with sharded rows and fsdp-sharded weights): the three steps' losses equal one
    device's."""
    losses = {}
    for name, mesh in (("one", jax.sharding.Mesh(np.array(jax.devices()[:1]), ("data",))),
                       ("4x2", make_mesh((("data", 4), ("fsdp", 2))))):
        state, step = _setup(mesh, "bfloat16_matmul")
        losses[name] = []
        for batch in _batches():
            state, metrics = step(state, global_batch(mesh, batch), jax.random.PRNGKey(1))
            losses[name].append(float(metrics["loss"]))
    np.testing.assert_allclose(losses["4x2"], losses["one"], rtol=1e-5)
