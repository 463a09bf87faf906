"""DINO mechanics against references written from the equations (numpy) and torch's optimizers."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import torch

from simpool_jax.train.dino import (
    check_dino_settings,
    DinoOptimizer,
    clip_per_tensor,
    collapse_metrics,
    dino_loss,
    teacher_temperature,
    update_center,
)
from simpool_jax.train.optim import warmup_cosine


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_dino_loss_and_center_match_numpy():
    rng = np.random.default_rng(0)
    b, k, n_crops = 3, 7, 5
    student = rng.standard_normal((n_crops * b, k)).astype(np.float32)
    teacher = rng.standard_normal((2 * b, k)).astype(np.float32)
    center = rng.standard_normal((1, k)).astype(np.float32) * 0.1
    # Reference: every (teacher global view i, student view v != i) pair, mean over the batch.
    s_crops = np.split(student / 0.1, n_crops)
    t_crops = np.split(np_softmax((teacher - center) / 0.04), 2)
    terms = [np.mean(np.sum(-t * np.log(np_softmax(s_crops[v])), -1))
             for i, t in enumerate(t_crops) for v in range(n_crops) if v != i]
    expected = np.mean(terms)
    ours = dino_loss(jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(center), n_crops, 0.1, 0.04)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    new_center = update_center(jnp.asarray(center), jnp.asarray(teacher), 0.9)
    np.testing.assert_allclose(new_center, 0.9 * center + 0.1 * teacher.mean(0, keepdims=True), rtol=1e-6)


def test_schedules_closed_forms():
    total = 1000
    lr = warmup_cosine(0.1, total, warmup_steps=100, min_value=1e-6)
    wd = warmup_cosine(0.04, total, 0, 0.4)
    mom = warmup_cosine(0.996, total, 0, 1.0)
    assert float(lr(50)) == pytest.approx(0.05)
    assert float(lr(100)) == pytest.approx(0.1)
    assert float(lr(550)) == pytest.approx(1e-6 + 0.5 * (0.1 - 1e-6), rel=1e-5)
    assert float(wd(0)) == pytest.approx(0.04) and float(wd(total)) == pytest.approx(0.4)
    assert float(wd(500)) == pytest.approx(0.22, rel=1e-5)
    assert float(mom(250)) == pytest.approx(1 + (0.996 - 1) * 0.5 * (1 + np.cos(np.pi / 4)), rel=1e-6)
    # Teacher temperature: np.linspace(0.04, 0.07, 30) then 0.07, indexed by epoch.
    ramp = np.linspace(0.04, 0.07, 30)
    for epoch in (0, 7, 29, 30, 99):
        expected = ramp[epoch] if epoch < 30 else 0.07
        assert float(teacher_temperature(jnp.asarray(epoch), 0.04, 0.07, 30)) == pytest.approx(expected, rel=1e-6)


def test_clipping_is_per_tensor():
    grads = {"a": jnp.full((4,), 3.0), "b": jnp.full((2, 2), 0.1)}  # norms 6 and 0.2
    clipped = clip_per_tensor(grads, 1.0)
    np.testing.assert_allclose(jnp.linalg.norm(clipped["a"]), 1.0 * 6 / (6 + 1e-6), rtol=1e-6)
    np.testing.assert_array_equal(clipped["b"], grads["b"])  # under the limit: untouched


def test_collapse_metrics_detect_both_collapses():
    k = 16
    uniform = collapse_metrics(jnp.zeros((8, k)), jnp.zeros((1, k)), 0.04)
    assert float(uniform["teacher_entropy"]) == pytest.approx(np.log(k), rel=1e-5)
    one_hot = collapse_metrics(jnp.tile(jnp.eye(k)[:1] * 10, (8, 1)), jnp.zeros((1, k)), 0.04)
    assert float(one_hot["teacher_kl_uniform"]) == pytest.approx(np.log(k), rel=1e-3)


def _params(rng):
    return {"backbone": {"w": rng.standard_normal((3, 4)).astype(np.float32),
                         "bias": rng.standard_normal(4).astype(np.float32)},
            "head": {"last_layer_v": rng.standard_normal((4, 5)).astype(np.float32)}}


@pytest.mark.parametrize("frozen", [False, True])
def test_adamw_matches_torch_and_freezing_leaves_last_layer_untouched(frozen):
    """Two steps of our AdamW (lr, wd per step) == torch.optim.AdamW with DINO's param groups
    (no decay on 1-D / biases); a frozen last layer gets grad None in torch: no update, no
    moment change, no weight decay."""
    rng = np.random.default_rng(1)
    params = _params(rng)
    grads = [jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
             for _ in range(2)]
    optimizer = DinoOptimizer("adamw")
    state, ours = optimizer.init(params), jax.tree.map(jnp.asarray, params)
    for g, lr, wd in zip(grads, (0.1, 0.05), (0.04, 0.2)):
        ours, state = optimizer.apply(g, state, ours, lr, wd, freeze_last=jnp.asarray(frozen))
    tensors = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in
               (("w", params["backbone"]["w"]), ("bias", params["backbone"]["bias"]),
                ("v", params["head"]["last_layer_v"]))}
    torch_opt = torch.optim.AdamW([{"params": [tensors["w"], tensors["v"]]},
                                   {"params": [tensors["bias"]], "weight_decay": 0.0}], lr=0.1)
    for g, lr, wd in zip(grads, (0.1, 0.05), (0.04, 0.2)):
        for group in torch_opt.param_groups:
            group["lr"] = lr
        torch_opt.param_groups[0]["weight_decay"] = wd
        tensors["w"].grad = torch.tensor(g["backbone"]["w"])
        tensors["bias"].grad = torch.tensor(g["backbone"]["bias"])
        tensors["v"].grad = None if frozen else torch.tensor(g["head"]["last_layer_v"])
        torch_opt.step()
    np.testing.assert_allclose(ours["backbone"]["w"], tensors["w"].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["backbone"]["bias"], tensors["bias"].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["head"]["last_layer_v"], tensors["v"].detach().numpy(), rtol=1e-5, atol=1e-6)
    if frozen:
        np.testing.assert_array_equal(ours["head"]["last_layer_v"], params["head"]["last_layer_v"])
        for leaf in jax.tree.leaves(state["last"]):
            assert not np.any(np.asarray(leaf))  # moments and step count never moved


def test_lars_matches_dino_reference():
    """DINO's LARS (utils.LARS) written from its definition, two steps with momentum."""
    rng = np.random.default_rng(2)
    params = _params(rng)
    grads = [jax.tree.map(lambda p: rng.standard_normal(p.shape).astype(np.float32), params)
             for _ in range(2)]
    optimizer = DinoOptimizer("lars", momentum=0.9)
    state, ours = optimizer.init(params), jax.tree.map(jnp.asarray, params)
    ref = jax.tree.map(lambda p: p.astype(np.float64), params)
    buf = jax.tree.map(np.zeros_like, ref)
    for g, lr, wd in zip(grads, (0.3, 0.2), (1e-6, 1e-5)):
        ours, state = optimizer.apply(g, state, ours, lr, wd, freeze_last=jnp.asarray(False))

        def lars(p, gr, b):
            d = gr.astype(np.float64)
            if p.ndim != 1:
                d = d + wd * p
                pn, dn = np.linalg.norm(p), np.linalg.norm(d)
                d = d * (0.001 * pn / dn if pn > 0 and dn > 0 else 1.0)
            b = 0.9 * b + d
            return p - lr * b, b

        pairs = jax.tree.map(lars, ref, g, buf)
        ref = jax.tree.map(lambda t: t[0], pairs, is_leaf=lambda x: isinstance(x, tuple))
        buf = jax.tree.map(lambda t: t[1], pairs, is_leaf=lambda x: isinstance(x, tuple))
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("name,value,message", [
    ("teacher_temp", 0.0, "must be positive"), ("student_temp", -0.1, "must be positive"),
    ("warmup_teacher_temp", 0.0, "must be positive"),
    ("center_momentum", 1.5, r"must be in \[0, 1\]"),
    ("momentum_teacher", -0.1, r"must be in \[0, 1\]"), ("clip_grad", -1.0, "must be >= 0"),
    ("freeze_last_layer_epochs", -1, "must be >= 0"),
    ("warmup_teacher_temp_epochs", -2, "must be >= 0"),
])
def test_dino_settings_the_step_cannot_use_are_errors(name, value, message):
    from repo_configs import get_config

    settings = dict(get_config("fmnist_dino").dino)
    check_dino_settings(settings)  # the shipped config passes
    with pytest.raises(ValueError, match=f"config.dino.{name} {message}"):
        check_dino_settings({**settings, name: value})
