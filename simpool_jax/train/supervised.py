"""The supervised train step and classification metrics.

loss = cross-entropy(logits, targets) with targets the (possibly mixed / smoothed) label
distribution; integer labels are one-hot encoded here with `label_smoothing`. BatchNorm
statistics are updated from the global batch (the mean runs over the sharded batch axis under
jit, like SyncBN). Optional model EMA of params and BN statistics. Optional bf16 compute
(`apply_in`): params stay float32 (SimPool itself always computes in float32).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from simpool_jax.models.matmul import bf16_matmuls

COMPUTE_DTYPES = ("float32", "bfloat16", "bfloat16_matmul")


def targets_of(labels: jax.Array, num_classes: int, label_smoothing: float) -> jax.Array:
    """Integer labels -> smoothed one-hot; label distributions (B, C) pass through."""
    if labels.ndim == 2:
        return labels.astype(jnp.float32)
    return optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)


def cast_tree(tree: Any, dtype: Any) -> Any:
    """Floating leaves to `dtype`."""
    return jax.tree.map(lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                        tree)


def check_compute_dtype(compute_dtype: str) -> None:
    """A readable error for a config's compute_dtype outside COMPUTE_DTYPES."""
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype={compute_dtype!r}: expected one of {COMPUTE_DTYPES}")


def apply_in(compute_dtype: str, module: Any, variables: dict, inputs: Any, **kwargs: Any) -> Any:
    """module.apply(variables, inputs, **kwargs) computed in `compute_dtype`:
      'float32'          as is;
      'bfloat16'         on bf16 copies of the params and inputs: bf16 activations and products
                         (BN statistics stay float32);
      'bfloat16_matmul'  on the float32 params and inputs, the layers' products multiplying bf16
                         copies of their operands into float32 (`bf16_matmuls`): the numerics of
                         torch.autocast(bfloat16) for matmuls, float32 for everything else.
    On XLA:CPU the last is the faster bf16 mode: it converts every bf16 elementwise op to float32
    and back, one rounding per op (Fashion-MNIST DINO step on one AMX Xeon core: 0.445 s in
    'bfloat16', 0.36 s here).
    """
    check_compute_dtype(compute_dtype)
    if compute_dtype == "bfloat16":
        variables = {**variables, "params": cast_tree(variables["params"], jnp.bfloat16)}
        inputs = cast_tree(inputs, jnp.bfloat16)
    with bf16_matmuls(compute_dtype == "bfloat16_matmul"):
        return module.apply(variables, inputs, **kwargs)


def make_train_step(model: Any, tx: optax.GradientTransformation, lr: Callable,
                    num_classes: int, label_smoothing: float = 0.0, ema_decay: float = 0.0,
                    compute_dtype: str = "float32") -> Callable:
    """(state, batch {'image', 'label' and/or soft 'labels'}, rng) -> (state, metrics); jit it
    with donation."""
    check_compute_dtype(compute_dtype)

    def step(state: dict, batch: dict, rng: jax.Array) -> tuple[dict, dict]:
        rng = jax.random.fold_in(rng, state["step"])
        # Soft targets from the pipeline (onehot + mixup / cutmix) win over integer labels.
        targets = (batch["labels"].astype(jnp.float32) if "labels" in batch
                   else targets_of(batch["label"], num_classes, label_smoothing))

        def loss_fn(params):
            variables = {"params": params, "batch_stats": state["batch_stats"]}
            out, mutated = apply_in(compute_dtype, model, variables, batch["image"], train=True,
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
