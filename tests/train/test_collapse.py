"""DINO collapse warnings: the rule on hand-built metric sequences, on DINO's own loss and
metrics of synthetic collapsed outputs, through the training loop, and on real tiny DINO runs
(a uniform-collapsing and a one-dimension-collapsing setting warn, a normal one does not)."""

import itertools
import json
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from simpool_jax.heads import DINOHead
from simpool_jax.model import build_model
from simpool_jax.train.collapse import CollapseMonitor, collapse_kinds
from simpool_jax.train.dino import DinoOptimizer, collapse_metrics, dino_loss, make_dino_step
from simpool_jax.train.loop import Job, run
from simpool_jax.train.optim import warmup_cosine

K = 256
LN_K = math.log(K)  # 5.5452; rtol 0.02 -> a band of 0.1109 nats
HEALTHY = {"loss": 5.2, "teacher_entropy": 5.0, "teacher_kl_uniform": 0.15}  # the FMNIST main job
UNIFORM = {"loss": 5.55, "teacher_entropy": 5.545, "teacher_kl_uniform": 0.0}
ONE_DIM = {"loss": 0.01, "teacher_entropy": 0.002, "teacher_kl_uniform": 5.54}


def warnings_of(sequence, start_step=0, patience=3, out_dim=K):
    monitor = CollapseMonitor(out_dim, start_step=start_step, patience=patience)
    return [(step, kind) for step, metrics in enumerate(sequence, start=1)
            for kind in monitor.update(step, metrics)]


def test_rule_bands_by_hand():
    assert (LN_K, 0.02 * LN_K) == pytest.approx((5.5452, 0.1109), abs=1e-4)
    # Loss within 0.1109 of ln 256 and entropy >= 5.4343 -> uniform.
    assert collapse_kinds(UNIFORM, K) == {"uniform"}
    assert collapse_kinds({**UNIFORM, "loss": 5.44}, K) == {"uniform"}     # |5.44 - 5.5452| = 0.105
    assert collapse_kinds({**UNIFORM, "loss": 5.43}, K) == set()           # 0.115: outside
    assert collapse_kinds({**UNIFORM, "loss": 6.5}, K) == set()            # student not following
    assert collapse_kinds({**UNIFORM, "teacher_entropy": 5.43}, K) == set()
    # KL to uniform >= 5.4343 and entropy <= 0.1109 -> one dimension.
    assert collapse_kinds(ONE_DIM, K) == {"one_dim"}
    assert collapse_kinds({**ONE_DIM, "teacher_kl_uniform": 5.43}, K) == set()
    assert collapse_kinds({**ONE_DIM, "teacher_entropy": 0.12}, K) == set()
    # Sharp but diverse teacher outputs (low entropy, mean far from one-hot) are healthy.
    sharp = {"loss": 1.0, "teacher_entropy": 0.05, "teacher_kl_uniform": 1.0}
    assert collapse_kinds(sharp, K) == set()
    assert collapse_kinds(HEALTHY, K) == set()


def test_warns_after_patience_once_per_episode_and_not_before_start():
    seq = [UNIFORM] * 4 + [UNIFORM, HEALTHY, UNIFORM, UNIFORM, UNIFORM, UNIFORM, UNIFORM,
                           HEALTHY, UNIFORM, UNIFORM, UNIFORM]
    # start_step 5: steps 1-4 are ignored; 5 then a noisy healthy 6; 7, 8, 9 -> warn at 9 only;
    # 10, 11 still collapsed (no repeat); 12 recovers; 13, 14, 15 -> a new episode, warn at 15.
    assert warnings_of(seq, start_step=5) == [(9, "uniform"), (15, "uniform")]
    assert warnings_of([ONE_DIM] * 5, patience=1) == [(1, "one_dim")]
    assert warnings_of([HEALTHY] * 20) == []
    # Each kind counts its own run: alternating kinds never add up.
    assert warnings_of([UNIFORM, ONE_DIM] * 3, patience=2) == []
    assert warnings_of([UNIFORM, UNIFORM, ONE_DIM, ONE_DIM], patience=2) == \
        [(2, "uniform"), (4, "one_dim")]


def test_message_names_the_step_and_numbers():
    monitor = CollapseMonitor(K, patience=1)
    message = monitor.update(1234, UNIFORM)["uniform"]
    for text in ("uniform collapse at step 1234", "loss 5.5500", "teacher entropy 5.5450",
                 "KL to uniform 0.0000", "ln(out_dim) 5.5452"):
        assert text in message


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="out_dim"):
        CollapseMonitor(1)
    with pytest.raises(ValueError, match="patience"):
        CollapseMonitor(K, patience=0)


def test_dino_loss_and_metrics_of_synthetic_collapsed_outputs():
    """Uniform outputs give loss = entropy = ln K; identical one-hot outputs give KL = ln K."""
    rng = np.random.default_rng(0)
    center = jnp.zeros((1, K))
    n_crops, batch = 4, 8

    def kinds(student, teacher, temp):
        metrics = collapse_metrics(teacher, center, temp)
        loss = dino_loss(student, teacher, center, n_crops, 0.1, temp)
        return collapse_kinds({"loss": float(loss), **{k: float(v) for k, v in metrics.items()}}, K)

    flat_s, flat_t = jnp.zeros((n_crops * batch, K)), jnp.zeros((2 * batch, K))
    assert kinds(flat_s, flat_t, 0.04) == {"uniform"}
    peak = jnp.zeros((K,)).at[7].set(1.0)
    same_s, same_t = jnp.tile(peak, (n_crops * batch, 1)), jnp.tile(peak, (2 * batch, 1))
    assert kinds(same_s, same_t, 0.01) == {"one_dim"}
    diverse_t = jnp.asarray(rng.standard_normal((2 * batch, K)), jnp.float32)
    diverse_s = jnp.asarray(rng.standard_normal((n_crops * batch, K)), jnp.float32)
    assert kinds(diverse_s, diverse_t, 0.04) == set()


def test_loop_prints_and_logs_each_collapse_once(tmp_path, capsys):
    script = [HEALTHY] * 2 + [ONE_DIM] * 6  # steps 1..8

    def step_fn(state, batch, rng):
        return {"step": state["step"] + 1}, script[int(state["step"])]

    job = Job(state={"step": jnp.zeros((), jnp.int32)}, shardings=None, step_fn=step_fn,
              train_batches=lambda start: itertools.repeat({}), total_steps=len(script),
              steps_per_epoch=len(script), global_batch_size=1,
              monitor=CollapseMonitor(K, start_step=2).update)
    config = ml_collections.ConfigDict(dict(seed=0, log_every=1, checkpoint_every=1000,
                                            keep_checkpoints=1, tensorboard=False))
    run(job, config, tmp_path)
    out = capsys.readouterr().out
    assert out.count("WARNING DINO one-dim collapse at step 5:") == 1 and out.count("WARNING") == 1
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    warnings = [r for r in records if "warning" in r]
    assert [(r["step"], r["warning"]) for r in warnings] == [(5, "one_dim")]
    assert "step 5" in warnings[0]["message"]
    assert sorted(r["step"] for r in records if "loss" in r) == list(range(1, 9))


# --- real tiny DINO runs ----------------------------------------------------------------------

TINY_K, STEPS, WARMUP = 32, 60, 20


def tiny_dino_run(teacher_temp: float, center_momentum: float) -> list[dict]:
    """Metrics of every step of a 1-block ViT DINO on noise images (lr 1e-2 with a 20-step
    warmup, teacher momentum 0.9): fast enough that both collapses set in within 60 steps."""
    config = ml_collections.ConfigDict(dict(dino=dict(
        student_temp=0.1, teacher_temp=teacher_temp, warmup_teacher_temp=teacher_temp,
        warmup_teacher_temp_epochs=0, center_momentum=center_momentum, clip_grad=3.0,
        freeze_last_layer_epochs=0, momentum_teacher=0.9)))
    model = build_model(dict(
        backbone="vit_tiny", backbone_kwargs=dict(depth=1, width=16, num_heads=1, patch_size=8,
                                                  posemb_grid=(2, 2)),
        pooling="simpool", pooling_kwargs=dict(gamma=1.25), recipe="dino", head="dino",
        head_kwargs=dict(out_dim=TINY_K, hidden_dim=16, bottleneck_dim=8)))
    optimizer = DinoOptimizer("adamw")
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 16, 16, 3)))["params"]
    state = {"params": params, "batch_stats": {}, "teacher_params": params,
             "teacher_batch_stats": {}, "opt": optimizer.init(params),
             "center": jnp.zeros((1, TINY_K)), "step": jnp.zeros((), jnp.int32)}
    schedules = {"lr": warmup_cosine(1e-2, STEPS, WARMUP), "wd": warmup_cosine(0.04, STEPS),
                 "momentum": warmup_cosine(0.9, STEPS, 0, 1.0)}
    step = jax.jit(make_dino_step(model, model, DINOHead(**model.head_kwargs), optimizer,
                                  schedules, config, steps_per_epoch=10))
    rng = np.random.default_rng(0)
    history = []
    for _ in range(STEPS):
        batch = {"global": rng.standard_normal((8, 2, 16, 16, 3)).astype(np.float32),
                 "local": rng.standard_normal((8, 1, 8, 8, 3)).astype(np.float32)}
        state, metrics = step(state, batch, jax.random.PRNGKey(1))
        history.append({k: float(v) for k, v in jax.device_get(metrics).items()})
    return history


@pytest.mark.parametrize("teacher_temp,center_momentum,expected", [
    (0.04, 0.9, set()),              # DINO's own settings
    (100.0, 0.9, {"uniform"}),       # a teacher far too soft: uniform targets
    (0.01, 1.0, {"one_dim"}),        # centre frozen at 0 and a very sharp teacher
])
def test_real_tiny_dino_runs(teacher_temp, center_momentum, expected):
    history = tiny_dino_run(teacher_temp, center_momentum)
    found = warnings_of(history, start_step=WARMUP, out_dim=TINY_K)
    assert {kind for _, kind in found} == expected, found
    assert len(found) == len(expected)  # one warning per episode
    if expected:  # the run sits in the collapse at the end: the loss at ln K, or KL at ln K
        last = history[-1]
        key = "loss" if expected == {"uniform"} else "teacher_kl_uniform"
        assert last[key] == pytest.approx(math.log(TINY_K), rel=0.02)
