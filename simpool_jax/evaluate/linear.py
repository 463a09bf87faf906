"""Linear-probe core with the protocol of DINO's eval_linear.py (SIMPOOL.md §5.2).

A Linear(dim -> classes) (weights N(0, 0.01), bias 0, no BatchNorm on the features) is trained with
cross-entropy on a frozen backbone's representation, recomputed in every step from that step's
augmented images (as officially; nothing is precomputed). SGD with momentum 0.9 and no weight decay;
the lr follows CosineAnnealingLR to 0 over the epochs, stepped per epoch (constant within one).
Only the linear layer is in the optimizer state; the backbone variables go into the jitted steps
as a read-only argument. Validation runs every epoch over the whole eval split (padded examples
masked out) and the reported number is the best validation top-1 over the epochs.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from simpool_jax.evaluate.representation import Represent
from simpool_jax.train.optim import warmup_cosine

MOMENTUM = 0.9
INIT_STD = 0.01
BASE_LR = 0.001  # eval_linear.py's --lr, for 256 examples per step; scaled linearly with the batch


def auto_lr(batch_size: int) -> float:
    """The official lr for a global batch: 0.001 x batch / 256."""
    return BASE_LR * batch_size / 256


def init_head(rng: jax.Array, dim: int, num_classes: int) -> dict[str, jax.Array]:
    """{'kernel' (dim, classes) ~ N(0, 0.01^2), 'bias' zeros}: eval_linear.py's LinearClassifier."""
    return {"kernel": INIT_STD * jax.random.normal(rng, (dim, num_classes), jnp.float32),
            "bias": jnp.zeros((num_classes,), jnp.float32)}


def epoch_cosine(base_lr: float, epochs: int, steps_per_epoch: int
                 ) -> Callable[[jax.Array], jax.Array]:
    """Per-step lr: base / 2 * (1 + cos(pi * e / epochs)) with epoch e = step // steps_per_epoch."""
    per_epoch = warmup_cosine(base_lr, epochs)
    return lambda step: per_epoch(jnp.asarray(step) // steps_per_epoch)


def make_optimizer(lr: Callable[[jax.Array], jax.Array]) -> optax.GradientTransformation:
    """torch.optim.SGD(momentum=0.9, weight_decay=0): buf = 0.9 buf + g; w -= lr * buf."""
    return optax.sgd(lr, momentum=MOMENTUM, nesterov=False)


def _logits(params: dict, features: jax.Array) -> jax.Array:
    return features @ params["kernel"] + params["bias"]


def make_train_step(represent: Represent, tx: optax.GradientTransformation,
                    lr: Callable[[jax.Array], jax.Array]) -> Callable:
    """(head {'params', 'opt', 'step'}, backbone variables, batch {'image', 'label'}) ->
    (head, {'loss', 'lr'}); the gradient reaches the linear layer only."""

    def step(head: dict, backbone: dict, batch: dict) -> tuple[dict, dict]:
        features = jax.lax.stop_gradient(represent(backbone, batch["image"]).astype(jnp.float32))

        def loss_fn(params: dict) -> jax.Array:
            logits = _logits(params, features)
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["label"]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(head["params"])
        updates, opt = tx.update(grads, head["opt"], head["params"])
        new = {"params": optax.apply_updates(head["params"], updates), "opt": opt,
               "step": head["step"] + 1}
        return new, {"loss": loss, "lr": lr(head["step"])}

    return step


def make_eval_step(represent: Represent) -> Callable:
    """(head params, backbone variables, batch {'image', 'label', 'mask'}) -> summed top-1 and
    top-5 hits and the count of real (mask True) examples."""

    def evaluate(params: dict, backbone: dict, batch: dict) -> dict:
        logits = _logits(params, represent(backbone, batch["image"]).astype(jnp.float32))
        top = jax.lax.top_k(logits, min(5, logits.shape[-1]))[1]
        hits = top == batch["label"][:, None]
        mask = batch["mask"].astype(jnp.float32)
        return {"top1": jnp.sum(hits[:, 0] * mask), "top5": jnp.sum(hits.any(-1) * mask),
                "count": jnp.sum(mask)}

    return evaluate


@dataclasses.dataclass
class ProbeResult:
    """Best validation top-1 (%) and its epoch (1-based), the top-5 of that epoch, one record per
    epoch (epoch, loss, lr, top1, top5), the linear layer of the best epoch and the feature size."""

    best_top1: float
    best_top5: float
    best_epoch: int
    history: list[dict]
    head: dict[str, np.ndarray]
    feature_dim: int


def evaluate_head(eval_step: Callable, params: dict, backbone: dict, batches: Iterable[dict]
                  ) -> tuple[float, float, int]:
    """(top-1 %, top-5 %, real examples) of the linear layer over one pass of eval batches."""
    sums = [jax.device_get(eval_step(params, backbone, batch)) for batch in batches]
    totals = {k: float(sum(s[k] for s in sums)) for k in ("top1", "top5", "count")}
    count = totals["count"]
    if not count:
        raise ValueError("the eval split has no examples")
    return 100 * totals["top1"] / count, 100 * totals["top5"] / count, int(count)


def train_probe(represent: Represent, backbone: dict, mesh: Mesh, train_batches: Iterator[dict],
                eval_batches: Callable[[], Iterable[dict]], *, num_classes: int, epochs: int,
                steps_per_epoch: int, lr: float, seed: int = 0,
                on_epoch: Callable[[dict], None] | None = None) -> ProbeResult:
    """Train the probe for `epochs` x `steps_per_epoch` steps, validating after every epoch.

    train_batches: endless global batches {'image', 'label'} (sharded over `mesh`'s batch axes);
    eval_batches(): one fresh pass of padded global batches {'image', 'label', 'mask'}.
    `on_epoch` gets each epoch's record (with 'best_top1' / 'best_epoch' so far) as it is done.
    """
    if epochs < 1 or steps_per_epoch < 1:
        raise ValueError(f"epochs ({epochs}) and steps_per_epoch ({steps_per_epoch}) must be >= 1")
    replicated = NamedSharding(mesh, P())
    backbone = jax.device_put(backbone, replicated)
    first = next(train_batches)
    train_batches = itertools.chain([first], train_batches)
    dim = jax.eval_shape(represent, backbone, first["image"]).shape[-1]
    schedule = epoch_cosine(lr, epochs, steps_per_epoch)
    tx = make_optimizer(schedule)
    params = init_head(jax.random.PRNGKey(seed), dim, num_classes)
    head = jax.device_put({"params": params, "opt": tx.init(params),
                           "step": jnp.zeros((), jnp.int32)}, replicated)
    train_step = jax.jit(make_train_step(represent, tx, schedule), donate_argnums=0)
    eval_step = jax.jit(make_eval_step(represent))
    history: list[dict] = []
    best = {"top1": -1.0, "top5": 0.0, "epoch": 0, "head": None}
    for epoch in range(1, epochs + 1):
        metrics, pending = [], None
        for batch in itertools.islice(train_batches, steps_per_epoch):
            head, m = train_step(head, backbone, batch)
            if pending is not None:  # at most two steps in flight (CPU collectives can deadlock)
                metrics.append(jax.device_get(pending))
            pending = m
        if pending is not None:
            metrics.append(jax.device_get(pending))
        if len(metrics) < steps_per_epoch:
            raise ValueError(f"the training stream ended after {len(metrics)} of {steps_per_epoch} "
                             f"steps of epoch {epoch}")
        top1, top5, _ = evaluate_head(eval_step, head["params"], backbone, eval_batches())
        if top1 > best["top1"]:
            best = {"top1": top1, "top5": top5, "epoch": epoch,
                    "head": jax.tree.map(np.asarray, jax.device_get(head["params"]))}
        record = {"epoch": epoch, "loss": float(np.mean([m["loss"] for m in metrics])),
                  "lr": float(metrics[0]["lr"]), "top1": top1, "top5": top5}
        history.append(record)
        if on_epoch:
            on_epoch({**record, "best_top1": best["top1"], "best_epoch": best["epoch"]})
    return ProbeResult(best["top1"], best["top5"], best["epoch"], history, best["head"], int(dim))
