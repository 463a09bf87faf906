"""The DINO trainer: student and teacher from one config, multi-crop data, k-NN at the end.

Config keys: model (head='dino'), teacher_drop_path (the official ConvNeXt teacher runs with
drop path active; ViT / ResNet teachers have none), input (pp ending in dino_multicrop; global
batch size), total_epochs / total_steps, optim (name adamw | lars, lr per 256 images — scaled by
batch / 256 as the official code —, min_lr, warmup_epochs, weight_decay, weight_decay_end,
b1, b2, momentum), dino (temperatures, centre momentum, clip_grad, freeze_last_layer_epochs,
momentum_teacher), knn (train / test input configs, ks, temperature; optional), seed,
compute_dtype (float32 | bfloat16 | bfloat16_matmul, `supervised.apply_in`: bf16 forward and
backward on float32 master weights; optional).
Every log step after the lr warmup is checked for uniform / one-dimension collapse
(`simpool_jax.train.collapse`), with a warning in the console and the metrics log.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from simpool_jax.data import check_eval_inputs, get_dataset, make_eval_iterator, make_train_iterator
from simpool_jax.evaluate.attention import save_attention_grid
from simpool_jax.evaluate.extract import extract_features
from simpool_jax.evaluate.foreground import attention_maps, fashion_mnist_iou
from simpool_jax.evaluate.knn import check_knn_settings, knn_accuracy
from simpool_jax.heads import DINOHead
from simpool_jax.model import build_model
from simpool_jax.train.collapse import CollapseMonitor
from simpool_jax.train.dino import DinoOptimizer, make_dino_step
from simpool_jax.train.loop import Job
from simpool_jax.train.optim import warmup_cosine
from simpool_jax.train.state import create_sharded
from simpool_jax.train.supervised_trainer import schedule_steps


def teacher_config(config: Any) -> dict:
    """The model config of the teacher: the student's, without drop path unless asked for
    (backbones without stochastic depth, such as ResNet, take the student's config as is)."""
    model = json.loads(config.model.to_json())
    backbone_kwargs = model.get("backbone_kwargs") or {}
    if not config.get("teacher_drop_path", False) and "drop_path_rate" in backbone_kwargs:
        backbone_kwargs["drop_path_rate"] = 0.0
    return model


def dino_schedules(config: Any, optim: dict, total_steps: int) -> dict[str, Callable]:
    """Per-step lr, weight decay and teacher momentum; `optim` as from `schedule_steps`.

    lr: warmup from 0 to optim.lr * batch / 256 (the official linear scaling rule), cosine to
    min_lr; weight decay: cosine weight_decay -> weight_decay_end; momentum: cosine to 1.
    """
    lr = optim["lr"] * config.input.batch_size / 256.0
    return {
        "lr": warmup_cosine(lr, total_steps, optim.get("warmup_steps", 0), optim.get("min_lr", 0.0)),
        "wd": warmup_cosine(optim["weight_decay"], total_steps, 0, optim["weight_decay_end"]),
        "momentum": warmup_cosine(config.dino.momentum_teacher, total_steps, 0, 1.0),
    }


def save_attention_figure(model: Any, variables: dict, batch: dict, path: Path, n: int = 8) -> None:
    """The teacher's attention over the first `n` images of a global eval batch: the pooler's,
    else the CLS attention, else the token-norm stand-in (`attention_maps` 'auto'). Every process
    calls it (the maps are one computation over the mesh); process 0 writes the figure."""
    images = batch["image"][:n]
    maps, grid, source = attention_maps(model, variables, images)
    pixels = np.asarray(multihost_utils.process_allgather(images, tiled=True))
    if jax.process_index() == 0:
        title = f"{source} attention of the DINO teacher ({model.pooling} pooling)"
        save_attention_grid(pixels, maps, grid, path, title=title)


def knn_evaluation(config: Any, mesh: Any, model: Any, workdir: Path) -> Any:
    """state -> {'knn_top1_k{k}': ...} on the teacher's features (None without config.knn);
    also writes knn.json and attention.png to the workdir. On Fashion-MNIST, the teacher's mean
    foreground IoU over the same test split joins them (`attention_iou`, `attention_source`)."""
    if not config.get("knn"):
        return None
    knn = config.knn
    check_knn_settings(tuple(knn.ks), knn.temperature)

    def evaluate(state: dict) -> dict:
        variables = {"params": state["teacher_params"], "batch_stats": state["teacher_batch_stats"]}
        forward = jax.jit(lambda x: model.apply(variables, x, with_head=False)["features"])
        train = extract_features(forward, make_eval_iterator(knn.train, mesh))
        test = extract_features(forward, make_eval_iterator(knn.test, mesh))
        result = knn_accuracy(*train, *test, ks=tuple(knn.ks), temperature=knn.temperature)
        metrics = {f"knn_{m}_k{k}": v[m] for k, v in result.items() for m in ("top1", "top5")}
        iou = {}
        if knn.test.name == "fashion_mnist":
            found = fashion_mnist_iou(model, variables, split=knn.test.split, mesh=mesh,
                                      limit=knn.test.get("limit"), batch_size=knn.test.batch_size,
                                      pp=knn.test.pp, data_dir=knn.test.get("data_dir"))
            iou = {"attention_iou": found["mean_iou"], "attention_source": found["source"],
                   "attention_mass": found["mass"]}
            metrics["attention_iou"] = found["mean_iou"]
        if jax.process_index() == 0:
            (workdir / "knn.json").write_text(json.dumps(
                {"step": int(jax.device_get(state["step"])), "train_examples": len(train[0]),
                 "test_examples": len(test[0]), "temperature": knn.temperature,
                 "knn": {str(k): v for k, v in result.items()}, **iou}, indent=2) + "\n")
        first = next(iter(make_eval_iterator(knn.test, mesh)))
        save_attention_figure(model, variables, first, workdir / "attention.png")
        return metrics

    return evaluate


def build_job(config: Any, mesh: Any, workdir: Path) -> Job:
    """Everything the loop needs for DINO training of `config` on `mesh`."""
    if config.model.get("head") != "dino":
        raise ValueError("the DINO trainer needs config.model.head = 'dino'")
    student, teacher = build_model(config.model), build_model(teacher_config(config))
    check_eval_inputs([config.knn.train, config.knn.test] if config.get("knn") else [], mesh)
    head = DINOHead(**student.head_kwargs)
    source = get_dataset(config.input.name, config.input.split, config.input.get("data_dir"),
                         limit=config.input.get("limit"))
    steps_per_epoch, total_steps, optim = schedule_steps(config, source.num_examples)
    schedules = dino_schedules(config, optim, total_steps)
    optimizer = DinoOptimizer(optim["name"], optim.get("b1", 0.9), optim.get("b2", 0.999),
                              momentum=optim.get("momentum", 0.9))
    size = config.image_size
    out_dim = student.head_kwargs["out_dim"]

    def init(rng: jax.Array) -> dict:
        variables = student.init(rng, jnp.zeros((2, size, size, 3), jnp.float32))
        params, stats = variables["params"], variables.get("batch_stats", {})
        return {"params": params, "batch_stats": stats, "teacher_params": params,
                "teacher_batch_stats": stats, "opt": optimizer.init(params),
                "center": jnp.zeros((1, out_dim), jnp.float32), "step": jnp.zeros((), jnp.int32)}

    state, shardings = create_sharded(init, mesh, jax.random.PRNGKey(config.seed))
    step = make_dino_step(student, teacher, head, optimizer, schedules, config, steps_per_epoch,
                          config.get("compute_dtype", "float32"))

    def train_batches(start_step: int):
        return make_train_iterator({**config.input, "seed": config.seed, "start_step": start_step},
                                   mesh)

    return Job(state=state, shardings=shardings, step_fn=jax.jit(step, donate_argnums=0),
               train_batches=train_batches, total_steps=total_steps,
               steps_per_epoch=steps_per_epoch, global_batch_size=config.input.batch_size,
               evaluate=knn_evaluation(config, mesh, teacher, Path(workdir)),
               monitor=CollapseMonitor(out_dim, start_step=optim.get("warmup_steps", 0)).update)

