"""DINO (Caron et al. 2021) as the official code computes it (ANCHORS.md §4, SIMPOOL.md §4.2).

loss = mean over pairs (teacher global view i, student view v != i) of
       sum_k -softmax((t_i - c) / T_t)_k * log_softmax(s_v / T_s)_k
centre c <- m c + (1 - m) mean over the global batch of the teacher outputs (m = 0.9);
teacher <- mom * teacher + (1 - mom) * student, mom cosine 0.996 -> 1 over training;
lr warmup + cosine, weight decay cosine 0.04 -> 0.4 (its own schedule), both per step;
teacher temperature warmed up linearly over epochs; gradient clipping per parameter tensor;
the head's last layer frozen (no update, no optimizer-state change) for the first epochs.
The optimizer (AdamW or LARS) is written out here because torch's per-tensor step counts under
freezing and DINO's LARS are not what optax's stock transforms do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

from simpool_jax.train.supervised import apply_in, check_compute_dtype

LAST_LAYER = ("head", "last_layer_v")
LAST_LAYER_G = ("head", "last_layer_g")


def teacher_temperature(epoch: jax.Array, warmup_temp: float, temp: float, warmup_epochs: int
                        ) -> jax.Array:
    """np.linspace(warmup_temp, temp, warmup_epochs) for the first epochs, then temp."""
    if warmup_epochs <= 1:
        return jnp.where(epoch < warmup_epochs, warmup_temp, temp)
    ramp = warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1)
    return jnp.where(epoch < warmup_epochs, ramp, temp)


def dino_loss(student: jax.Array, teacher: jax.Array, center: jax.Array, n_crops: int,
              student_temp: float, teacher_temp: jax.Array) -> jax.Array:
    """student (n_crops * B, K) and teacher (2 * B, K) logits, crop-major; scalar loss."""
    s = jax.nn.log_softmax(student / student_temp, axis=-1).reshape(n_crops, -1, student.shape[-1])
    t = jax.nn.softmax((teacher - center) / teacher_temp, axis=-1).reshape(2, -1, teacher.shape[-1])
    total, terms = 0.0, 0
    for i in range(2):
        for v in range(n_crops):
            if v != i:
                total = total + jnp.mean(jnp.sum(-t[i] * s[v], axis=-1))
                terms += 1
    return total / terms


def update_center(center: jax.Array, teacher: jax.Array, momentum: float = 0.9) -> jax.Array:
    """EMA of the teacher logits' mean over the (global) batch."""
    return center * momentum + jnp.mean(teacher, axis=0, keepdims=True) * (1 - momentum)


def collapse_metrics(teacher: jax.Array, center: jax.Array, temp: jax.Array) -> dict[str, jax.Array]:
    """Mean per-sample entropy of the teacher distribution and KL(mean distribution || uniform).

    Uniform collapse: entropy -> ln K. One-dimension collapse: KL to uniform -> ln K.
    """
    p = jax.nn.softmax((teacher - center) / temp, axis=-1)
    entropy = -jnp.mean(jnp.sum(p * jnp.log(p + 1e-12), axis=-1))
    mean = jnp.mean(p, axis=0)
    kl = jnp.log(p.shape[-1]) + jnp.sum(mean * jnp.log(mean + 1e-12))
    return {"teacher_entropy": entropy, "teacher_kl_uniform": kl}


def clip_per_tensor(grads: Any, clip: float) -> Any:
    """DINO's clip_gradients: each tensor scaled by min(1, clip / (||g|| + 1e-6)) on its own."""
    if not clip:
        return grads

    def clip_one(g):
        coef = clip / (jnp.sqrt(jnp.sum(g * g)) + 1e-6)
        return jnp.where(coef < 1, g * coef, g)

    return jax.tree.map(clip_one, grads)


def split_last_layer(tree: Any) -> tuple[dict, dict]:
    """(everything else, the head's last layer) as flat {path: leaf} dicts."""
    flat = traverse_util.flatten_dict(dict(tree))
    last = {k: v for k, v in flat.items() if k in (LAST_LAYER, LAST_LAYER_G)}
    return {k: v for k, v in flat.items() if k not in last}, last


def _lars_direction(grads: dict, params: dict, buffers: dict, wd: jax.Array, momentum: float,
                    eta: float = 0.001) -> tuple[dict, dict]:
    """DINO's LARS: decay and trust ratio on >1-D tensors only, then heavy-ball momentum."""
    new_buffers, updates = {}, {}
    for k, g in grads.items():
        p = params[k]
        if p.ndim > 1:
            g = g + wd * p
            p_norm, g_norm = jnp.linalg.norm(p), jnp.linalg.norm(g)
            g = g * jnp.where((p_norm > 0) & (g_norm > 0), eta * p_norm / g_norm, 1.0)
        new_buffers[k] = momentum * buffers[k] + g
        updates[k] = new_buffers[k]
    return updates, new_buffers


class DinoOptimizer:
    """AdamW or LARS with per-step lr / weight decay and a freezable last layer.

    State: {'rest': ..., 'last': ...}, the optimizer state of the two parameter groups; the last
    layer's state (and torch's per-parameter Adam step count) does not move while frozen.
    """

    def __init__(self, name: str, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                 momentum: float = 0.9):
        if name not in ("adamw", "lars"):
            raise ValueError(f"DINO optimizer {name!r} not in ('adamw', 'lars')")
        self.name, self.momentum = name, momentum
        self.adam = optax.scale_by_adam(b1, b2, eps)

    def init(self, params: Any) -> dict:
        """Zero moments / buffers for both groups."""
        groups = dict(zip(("rest", "last"), split_last_layer(params)))
        if self.name == "adamw":
            return {g: self.adam.init(p) for g, p in groups.items()}
        return {g: jax.tree.map(jnp.zeros_like, p) for g, p in groups.items()}

    def _direction(self, grads: dict, params: dict, state: Any, wd: jax.Array) -> tuple[dict, Any]:
        if self.name == "lars":
            return _lars_direction(grads, params, state, wd, self.momentum)
        updates, state = self.adam.update(grads, state)
        # Decoupled decay (torch AdamW: p *= 1 - lr * wd) on >1-D tensors that are not biases.
        updates = {k: u + wd * params[k] if (params[k].ndim > 1 and k[-1] != "bias") else u
                   for k, u in updates.items()}
        return updates, state

    def apply(self, grads: Any, state: dict, params: Any, lr: jax.Array, wd: jax.Array,
              freeze_last: jax.Array) -> tuple[Any, dict]:
        """New params and optimizer state; with freeze_last the last layer stays as it was."""
        (g_rest, g_last), (p_rest, p_last) = split_last_layer(grads), split_last_layer(params)
        u_rest, s_rest = self._direction(g_rest, p_rest, state["rest"], wd)
        u_last, s_last = self._direction(g_last, p_last, state["last"], wd)
        s_last = jax.tree.map(lambda new, old: jnp.where(freeze_last, old, new), s_last, state["last"])
        new = {k: p_rest[k] - lr * u for k, u in u_rest.items()}
        new.update({k: jnp.where(freeze_last, p_last[k], p_last[k] - lr * u) for k, u in u_last.items()})
        return traverse_util.unflatten_dict(new), {"rest": s_rest, "last": s_last}


def check_dino_settings(d: Any) -> None:
    """ValueError for `config.dino` values the step cannot use: temperatures must be positive
    (0 divides by zero: a NaN at step 1), momenta in [0, 1], the rest non-negative."""
    for name in ("student_temp", "teacher_temp", "warmup_teacher_temp"):
        if not d[name] > 0:
            raise ValueError(f"config.dino.{name} must be positive, got {d[name]}")
    for name in ("center_momentum", "momentum_teacher"):
        if name in d and not 0 <= d[name] <= 1:
            raise ValueError(f"config.dino.{name} must be in [0, 1], got {d[name]}")
    for name in ("warmup_teacher_temp_epochs", "clip_grad", "freeze_last_layer_epochs"):
        if not d[name] >= 0:
            raise ValueError(f"config.dino.{name} must be >= 0, got {d[name]}")


def make_dino_step(model: Any, teacher_model: Any, head: Any, optimizer: DinoOptimizer,
                   schedules: dict[str, Callable], config: Any, steps_per_epoch: int,
                   compute_dtype: str = "float32") -> Callable:
    """(state, batch {'global' (B,2,G,G,3), ['local' (B,N,L,L,3)]}, rng) -> (state, metrics).

    model / teacher_model: the same architecture (the teacher may lack drop path).
    compute_dtype: student, teacher and head compute as `supervised.apply_in` says ('bfloat16':
    bf16 copies of params and crops; 'bfloat16_matmul': bf16 operands in the products only), as
    the supervised step does (DINO's fp16 autocast, which the SimPool commands leave off); the
    loss, centre, optimizer, EMA and the state stay float32."""
    d = config.dino
    check_dino_settings(d)
    check_compute_dtype(compute_dtype)

    def run(module: Any, params: dict, stats: dict, x: jax.Array, **kwargs: Any) -> Any:
        out, mutated = apply_in(compute_dtype, module, {"params": params, "batch_stats": stats},
                                x, mutable=["batch_stats"], **kwargs)
        return jax.tree.map(lambda y: y.astype(jnp.float32) if jnp.issubdtype(y.dtype, jnp.floating)
                            else y, out), mutated

    def crop_major(x: jax.Array) -> jax.Array:
        return jnp.swapaxes(x, 0, 1).reshape(-1, *x.shape[2:])

    def step(state: dict, batch: dict, rng: jax.Array) -> tuple[dict, dict]:
        it = state["step"]
        epoch = it // steps_per_epoch
        rng = jax.random.fold_in(rng, it)
        views = [crop_major(batch["global"])]
        if "local" in batch:
            views.append(crop_major(batch["local"]))
        n_crops = 2 + (batch["local"].shape[1] if "local" in batch else 0)
        temp = teacher_temperature(epoch, d.warmup_teacher_temp, d.teacher_temp,
                                   d.warmup_teacher_temp_epochs)
        t_out, t_mut = run(teacher_model, state["teacher_params"], state["teacher_batch_stats"],
                           views[0], train=True, rngs={"dropout": jax.random.fold_in(rng, 1)})
        teacher = jax.lax.stop_gradient(t_out["logits"])

        def loss_fn(params):
            stats = state["batch_stats"]
            features = []
            for i, view in enumerate(views):  # one backbone call per resolution, as the official
                out, mut = run(model, params, stats, view, train=True, with_head=False,
                               rngs={"dropout": jax.random.fold_in(rng, 10 + i)})
                stats = {**stats, **mut.get("batch_stats", {})}
                features.append(out["features"])
            logits, head_mut = run(head, params["head"], stats.get("head", {}),
                                   jnp.concatenate(features), train=True)
            if head_mut.get("batch_stats"):  # a head with BN
                stats = {**stats, "head": head_mut["batch_stats"]}
            loss = dino_loss(logits, teacher, state["center"], n_crops, d.student_temp, temp)
            return loss, stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        grad_norm = optax.global_norm(grads)
        grads = clip_per_tensor(grads, d.clip_grad)
        lr, wd, mom = schedules["lr"](it), schedules["wd"](it), schedules["momentum"](it)
        params, opt = optimizer.apply(grads, state["opt"], state["params"], lr, wd,
                                      freeze_last=epoch < d.freeze_last_layer_epochs)
        teacher_params = jax.tree.map(lambda t, s: mom * t + (1 - mom) * s,
                                      state["teacher_params"], params)
        new = dict(state, params=params, opt=opt, step=it + 1, batch_stats=stats,
                   teacher_params=teacher_params,
                   teacher_batch_stats=t_mut.get("batch_stats", state["teacher_batch_stats"]),
                   center=update_center(state["center"], teacher, d.center_momentum))
        metrics = {"loss": loss, "grad_norm": grad_norm, "lr": lr, "wd": wd, "momentum": mom,
                   "teacher_temp": temp, **collapse_metrics(teacher, state["center"], temp)}
        return new, metrics

    return step
