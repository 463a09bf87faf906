"""The supervised train step and classification metrics.

loss = cross-entropy(logits, targets) with targets the (possibly mixed / smoothed) label
distribution; integer labels are one-hot encoded here with `label_smoothing`. BatchNorm
statistics are updated from the global batch (the mean runs over the sharded batch axis under
jit, like SyncBN). Optional model EMA of params and BN statistics. Optional bf16 compute: params
stay fp32, the forward runs on bf16 copies (SimPool itself always computes in fp32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def targets_of(labels: jax.Array, num_classes: int, label_smoothing: float) -> jax.Array:
    """Integer labels -> smoothed one-hot; label distributions (B, C) pass through."""
    if labels.ndim == 2:
        return labels.astype(jnp.float32)
    return optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)


def cast_tree(tree: Any, dtype: Any) -> Any:
    """Floating leaves to `dtype` (no-op for float32)."""
    if dtype == jnp.float32:
        return tree
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                        tree)


def make_train_step(model: Any, tx: optax.GradientTransformation, lr: Callable,
                    num_classes: int, label_smoothing: float = 0.0, ema_decay: float = 0.0,
                    compute_dtype: str = "float32") -> Callable:
    """(state, batch {'image', 'label' and/or soft 'labels'}, rng) -> (state, metrics); jit it
    with donation."""
    dtype = COMPUTE_DTYPES[compute_dtype]

    def step(state: dict, batch: dict, rng: jax.Array) -> tuple[dict, dict]:
        rng = jax.random.fold_in(rng, state["step"])
        # Soft targets from the pipeline (onehot + mixup / cutmix) win over integer labels.
        targets = (batch["labels"].astype(jnp.float32) if "labels" in batch
                   else targets_of(batch["label"], num_classes, label_smoothing))

        def loss_fn(params):
            variables = {"params": cast_tree(params, dtype), "batch_stats": state["batch_stats"]}
            out, mutated = model.apply(variables, cast_tree(batch["image"], dtype), train=True,
                                       rngs={"dropout": rng}, mutable=["batch_stats"])
            logits = out["logits"].astype(jnp.float32)
            return optax.softmax_cross_entropy(logits, targets).mean(), (logits, mutated)

        (loss, (logits, mutated)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt = tx.update(grads, state["opt"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        new = dict(state, params=params, opt=opt, step=state["step"] + 1,
                   batch_stats=mutated.get("batch_stats", state["batch_stats"]))
        if ema_decay:
            mix = lambda e, p: ema_decay * e + (1 - ema_decay) * p  # noqa: E731
            new["ema_params"] = jax.tree.map(mix, state["ema_params"], params)
            new["ema_batch_stats"] = jax.tree.map(mix, state["ema_batch_stats"], new["batch_stats"])
        accuracy = jnp.mean(jnp.argmax(logits, -1) == jnp.argmax(targets, -1))
        metrics = {"loss": loss, "grad_norm": optax.global_norm(grads), "lr": lr(state["step"]),
                   "train_accuracy": accuracy}
        return new, metrics

    return step


def make_eval_step(model: Any) -> Callable:
    """(variables, batch {'image', 'label', 'mask'}) -> summed top-1 / top-5 hits and count."""

    def evaluate(variables: dict, batch: dict) -> dict:
        logits = model.apply(variables, batch["image"])["logits"]
        labels = batch["label"] if batch["label"].ndim == 1 else jnp.argmax(batch["label"], -1)
        k = min(5, logits.shape[-1])
        top = jax.lax.top_k(logits, k)[1]
        mask = batch["mask"].astype(jnp.float32)
        hits = top == labels[:, None]
        return {"top1": jnp.sum(hits[:, 0] * mask), "top5": jnp.sum(hits.any(-1) * mask),
                "count": jnp.sum(mask)}

    return evaluate
