"""The supervised trainer: model, data, optimizer and evaluation of a config, as a loop `Job`.

Config keys used here: model (build_model), input / eval_input (simpool_jax.data iterators;
batch sizes are global), image_size, total_epochs or total_steps, optim (make_optimizer; also
warmup_epochs), label_smoothing, ema_decay, compute_dtype (`supervised.apply_in`), seed.
Evaluation reports top-1 / top-5 of the raw weights and, with EMA, of the EMA weights, over the
whole eval split exactly once.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from simpool_jax.data import (
    check_eval_inputs,
    check_labels_fit,
    get_dataset,
    make_eval_iterator,
    make_train_iterator,
)
from simpool_jax.model import build_model
from simpool_jax.train.loop import Job
from simpool_jax.train.optim import make_optimizer
from simpool_jax.train.state import create_state
from simpool_jax.train.supervised import make_eval_step, make_train_step


def schedule_steps(config: Any, num_train_examples: int) -> tuple[int, int, dict]:
    """(steps per epoch, total steps, optim config with warmup_epochs turned into steps)."""
    batch = config.input.batch_size
    steps_per_epoch = max(num_train_examples // batch, 1)
    total = config.get("total_steps") or int(round(config.total_epochs * steps_per_epoch))
    optim = dict(config.optim)
    if "warmup_epochs" in optim:
        optim["warmup_steps"] = int(round(optim.pop("warmup_epochs") * steps_per_epoch))
    return steps_per_epoch, total, optim


def build_job(config: Any, mesh: Any, workdir: Any = None) -> Job:
    """Everything the loop needs for supervised training of `config` on `mesh`."""
    model = build_model(config.model)
    num_classes = config.model.get("num_classes")
    check_eval_inputs([config.eval_input] if config.get("eval_input") else [], mesh, num_classes)
    source = get_dataset(config.input.name, config.input.split, config.input.get("data_dir"),
                         limit=config.input.get("limit"))
    check_labels_fit(source, num_classes)
    steps_per_epoch, total_steps, optim = schedule_steps(config, source.num_examples)
    shape = (config.image_size, config.image_size, 3)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((2, *shape)))["params"]
    tx, lr = make_optimizer(optim, total_steps, abstract)
    ema_decay = config.get("ema_decay", 0.0)
    state, shardings = create_state(model, tx, shape, mesh, jax.random.PRNGKey(config.seed),
                                    ema=bool(ema_decay))
    step = make_train_step(model, tx, lr, config.model.num_classes,
                           config.get("label_smoothing", 0.0), ema_decay,
                           config.get("compute_dtype", "float32"))
    eval_step = jax.jit(make_eval_step(model))

    def train_batches(start_step: int):
        return make_train_iterator({**config.input, "seed": config.seed, "start_step": start_step},
                                   mesh)

    def evaluate(state: dict) -> dict:
        weights = {"": (state["params"], state["batch_stats"])}
        if ema_decay:
            weights["ema_"] = (state["ema_params"], state["ema_batch_stats"])
        totals = {name: {"top1": 0.0, "top5": 0.0, "count": 0.0} for name in weights}
        for batch in make_eval_iterator(config.eval_input, mesh):
            for name, (params, stats) in weights.items():
                hits = jax.device_get(eval_step({"params": params, "batch_stats": stats}, batch))
                for k in totals[name]:
                    totals[name][k] += float(hits[k])
        return {f"{name}eval_{k}": 100.0 * t[k] / max(t["count"], 1.0)
                for name, t in totals.items() for k in ("top1", "top5")}

    return Job(state=state, shardings=shardings, step_fn=jax.jit(step, donate_argnums=0),
               train_batches=train_batches, total_steps=total_steps,
               steps_per_epoch=steps_per_epoch, global_batch_size=config.input.batch_size,
               evaluate=evaluate if config.get("eval_input") else None)
