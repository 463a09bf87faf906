"""Optimizers, schedules and weight-decay masks as the official recipes define them.

Schedules are per step: linear warmup from `warmup_init` to the base lr over `warmup_steps`, then
cosine to `min_lr` (DINO's `cosine_scheduler`: final + (base - final)/2 * (1 + cos(pi t / T))).
Weight decay is not applied to biases and 1-D parameters (norms, layer scales, SimPool's beta);
the timm recipes also exclude `pos_embed` and `cls_token` (SIMPOOL.md §8.13).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util

_TIMM_NO_DECAY = ("pos_embed", "cls_token")


def warmup_cosine(base: float, total_steps: int, warmup_steps: int = 0, min_value: float = 0.0,
                  warmup_init: float = 0.0) -> Callable[[jax.Array], jax.Array]:
    """Per-step value: linear warmup_init -> base over warmup_steps, then cosine base -> min."""
    decay_steps = max(total_steps - warmup_steps, 1)

    def schedule(step: jax.Array) -> jax.Array:
        step = jnp.asarray(step, jnp.float32)
        warm = warmup_init + (base - warmup_init) * step / max(warmup_steps, 1)
        t = jnp.clip(step - warmup_steps, 0, decay_steps) / decay_steps
        cosine = min_value + 0.5 * (base - min_value) * (1 + jnp.cos(jnp.pi * t))
        return jnp.where(step < warmup_steps, warm, cosine)

    return schedule


def decay_mask(params: Mapping[str, Any], exclude_posemb: bool) -> Any:
    """True where weight decay applies: ndim > 1, not a bias (and not pos_embed / cls_token)."""
    flat = traverse_util.flatten_dict(dict(params))
    mask = {
        path: (leaf.ndim > 1 and path[-1] != "bias"
               and not (exclude_posemb and path[-1] in _TIMM_NO_DECAY))
        for path, leaf in flat.items()
    }
    return traverse_util.unflatten_dict(mask)


def make_optimizer(config: Mapping[str, Any], total_steps: int, params: Any
                   ) -> tuple[optax.GradientTransformation, Callable[[jax.Array], jax.Array]]:
    """(optax optimizer, lr schedule) from `config.optim`.

    Keys: name ('adamw' | 'sgd' | 'lars'), lr, min_lr, warmup_steps, warmup_init, weight_decay,
    b1, b2, eps (adamw), momentum, nesterov (sgd / lars), clip_grad_norm (global norm; 0 = off),
    exclude_posemb_from_decay (timm recipes).
    """
    name = config["name"]
    lr = warmup_cosine(config["lr"], total_steps, config.get("warmup_steps", 0),
                       config.get("min_lr", 0.0), config.get("warmup_init", 0.0))
    mask = decay_mask(params, config.get("exclude_posemb_from_decay", False))
    wd = config.get("weight_decay", 0.0)
    if name == "adamw":
        core = optax.adamw(lr, b1=config.get("b1", 0.9), b2=config.get("b2", 0.999),
                           eps=config.get("eps", 1e-8), weight_decay=wd, mask=mask)
    elif name == "sgd":
        core = optax.chain(optax.add_decayed_weights(wd, mask),
                           optax.sgd(lr, momentum=config.get("momentum", 0.9),
                                     nesterov=config.get("nesterov", True)))
    elif name == "lars":
        # LARS skips 1-D parameters for both decay and trust-ratio adaptation (DINO's LARS).
        core = optax.lars(lr, weight_decay=wd, weight_decay_mask=mask, trust_ratio_mask=mask,
                          momentum=config.get("momentum", 0.9), nesterov=False)
    else:
        raise ValueError(f"optimizer {name!r} not in ('adamw', 'sgd', 'lars')")
    clip = config.get("clip_grad_norm", 0.0)
    return (optax.chain(optax.clip_by_global_norm(clip), core) if clip else core), lr
