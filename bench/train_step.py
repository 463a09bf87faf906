"""Supervised train-step throughput (images/s): our jitted step vs the same PyTorch step, same run.

One step = forward, cross-entropy with label smoothing, backward, global-norm gradient clipping
and an AdamW update with the timm weight-decay mask (no decay on biases, 1-D parameters and
pos_embed), lr from the schedule of the step's count. Cases:
  vit_small  ViT-S/16 + SimPool (gamma 1.25, the backbone's final norm before pooling) + a
             1000-way linear head, batch 8 at 224 px; AdamW lr 5e-4, wd 0.05, label smoothing
             0.1 (the supervised SimPool recipe, SIMPOOL.md §4.3) and clipping at 1.0 (the
             recipe has none; here it is, to time the clipping our trainer offers);
  fmnist     the model, batch (128 at 28 px), optimizer and label smoothing of
             configs/fmnist_supervised.py (ViT width 96, depth 4, patch 4, SimPool).
Drop path and dropout are off in both frameworks (their random masks would make the two
first-step losses incomparable; the fmnist config has none, the ViT-S recipe 0.1 of each), no
mixup, no model EMA.

Ours: `simpool_jax.train.supervised.make_train_step` with the optimizer and schedule of
`simpool_jax.train.optim.make_optimizer`, as the supervised trainer builds them, jitted with the
state donated; the state is a plain dict on the default device (no mesh).
Reference: `SimPoolClassifier` (bench/torch_reference.py: timm `forward_features` of a
`class_token=False` ViT + a PyTorch SimPool from the math + a linear head), NCHW,
`F.cross_entropy(label_smoothing=...)`, `clip_grad_norm_`, `torch.optim.AdamW` on timm's
`param_groups_weight_decay` (pos_embed excluded), lr set per step from the same schedule values,
`zero_grad(set_to_none=True)`: timm's train loop.

Same weights, same batch: the reference's weights are converted into ours with
`simpool_jax.convert.variables_from_torch` (strict); the batch (random images, random labels) is
fixed for all steps, data loading is not timed. Sanity check: the first step's loss and
pre-clipping gradient norm of both, which must agree to ~1e-4 relative (printed as |Δ|).
The steps start after the lr warmup, so every timed update is a real one.

Threads, timing (ABBA-interleaved rounds), contention column, `--wait-quiet`: bench/common.py.
Runs on whatever `jax.devices()` is; on a GPU the reference runs on CUDA.

    .venv/bin/python bench/train_step.py                    # table
    .venv/bin/python bench/train_step.py --json             # JSON lines on stdout, table on stderr
    .venv/bin/python bench/train_step.py --models fmnist --iters 10 --wait-quiet 600
"""

from __future__ import annotations

import argparse
import time
from typing import Any

# First: `common` sets the environment defaults that jax / torch / timm read at import.
from common import (FIRST_STEP_HEADER, bench_parser, format_first_step, measure, parse_bench_args,
                    print_header, print_row, start)

FMNIST_EXAMPLES = 60_000

CASES = {
    "vit_small": dict(
        model=dict(backbone="vit_small", pooling="simpool", pooling_kwargs=dict(gamma=1.25),
                   recipe="supervised", head="linear", num_classes=1000),
        batch_size=8, image_size=224, label_smoothing=0.1, num_examples=1_281_167,
        epochs=100, optim=dict(name="adamw", lr=5e-4, warmup_epochs=5, warmup_init=1e-6,
                               weight_decay=0.05, clip_grad_norm=1.0,
                               exclude_posemb_from_decay=True)),
    "fmnist": "configs/fmnist_supervised.py",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (module docstring)."""
    p = bench_parser(__doc__, CASES)
    p.add_argument("--batch-size", type=int, default=0, help="override the case's batch size")
    return parse_bench_args(p, argv, CASES, iters=5, warmup=1)


def case_config(case: str) -> dict:
    """{model, batch_size, image_size, label_smoothing, optim (warmup in steps), total_steps}.

    Epochs become steps as the supervised trainer's `schedule_steps` does (not imported: its
    module pulls in TensorFlow, which has no business in a timing process)."""
    spec = CASES[case]
    if isinstance(spec, str):  # a training config of this repo
        from configs.fmnist_supervised import get_config

        config = get_config("simpool")
        spec = dict(model=config.model.to_dict(), batch_size=config.input.batch_size,
                    image_size=config.image_size, label_smoothing=config.label_smoothing,
                    num_examples=FMNIST_EXAMPLES, epochs=config.total_epochs,
                    optim=config.optim.to_dict())
    steps_per_epoch = max(spec["num_examples"] // spec["batch_size"], 1)
    optim = dict(spec["optim"])
    optim["warmup_steps"] = int(round(optim.pop("warmup_epochs", 0) * steps_per_epoch))
    if not optim.get("clip_grad_norm"):
        raise ValueError(f"case {case}: the bench times a clipped step; set optim.clip_grad_norm")
    return dict(spec, optim=optim, total_steps=int(round(spec["epochs"] * steps_per_epoch)))


def build_reference(config: dict, device: Any):
    """(torch model on `device`, its AdamW) with the timm recipe's weight-decay groups."""
    import torch
    from torch_reference import SimPoolClassifier, timm_vit

    from simpool_jax.convert.torch_env import import_timm

    import_timm()  # timm's import needs the torchvision shim first
    from timm.optim import param_groups_weight_decay

    model, optim = config["model"], config["optim"]
    timm_name, timm_kwargs = timm_vit(model["backbone"], model.get("backbone_kwargs") or {})
    ref = SimPoolClassifier(timm_name, model["pooling_kwargs"]["gamma"], "before",
                            config["image_size"], model["num_classes"], **timm_kwargs)
    ref = ref.to(device).train()
    no_decay = (["backbone.pos_embed", "backbone.cls_token"]
                if optim.get("exclude_posemb_from_decay") else [])
    groups = param_groups_weight_decay(ref, optim["weight_decay"], no_weight_decay_list=no_decay)
    adamw = torch.optim.AdamW(groups, lr=optim["lr"], betas=(optim.get("b1", 0.9),
                              optim.get("b2", 0.999)), eps=optim.get("eps", 1e-8))
    return ref, adamw


def run_case(case: str, args: argparse.Namespace) -> dict:
    """Build both steps on the same weights, check the first losses, time them interleaved."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch_reference import synchronize, torch_device

    from simpool_jax.convert import variables_from_torch
    from simpool_jax.model import build_model
    from simpool_jax.train.optim import make_optimizer
    from simpool_jax.train.supervised import make_train_step

    config = case_config(case)
    if args.batch_size:
        config["batch_size"] = args.batch_size
    b, s, optim = config["batch_size"], config["image_size"], config["optim"]
    num_classes, smoothing = config["model"]["num_classes"], config["label_smoothing"]
    device = torch_device(jax.devices()[0].platform)
    torch.manual_seed(0)
    ref, adamw = build_reference(config, device)
    model = build_model(config["model"])
    assert model.norm == "before", model.norm
    params = variables_from_torch(model, ref.state_dict_for_ours(model), "timm")["params"]
    tx, lr = make_optimizer(optim, config["total_steps"], params)
    first = optim.get("warmup_steps", 0)  # past the warmup: every timed update is a real one
    state = jax.device_put({"params": params, "batch_stats": {}, "opt": tx.init(params),
                            "step": jnp.asarray(first, jnp.int32)})
    lrs = np.asarray(jax.vmap(lr)(jnp.arange(first, first + 1 + args.warmup + 2 * args.iters)))

    rng = np.random.default_rng(0)
    images = rng.standard_normal((b, 3, s, s), dtype=np.float32)
    labels = rng.integers(0, num_classes, b)
    x_torch = torch.from_numpy(images).to(device)
    y_torch = torch.from_numpy(labels).to(device)
    batch = jax.device_put({"image": jnp.asarray(images.transpose(0, 2, 3, 1)),
                            "label": jnp.asarray(labels, jnp.int32)})
    key = jax.random.PRNGKey(0)

    step = jax.jit(make_train_step(model, tx, lr, num_classes, smoothing), donate_argnums=0)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0
    held = {"state": state, "torch_step": 0}

    def ours():
        held["state"], metrics = compiled(held["state"], batch, key)
        return jax.block_until_ready((held["state"], metrics))[1]

    def reference():
        for group in adamw.param_groups:
            group["lr"] = float(lrs[held["torch_step"]])
        held["torch_step"] += 1
        adamw.zero_grad(set_to_none=True)
        loss = F.cross_entropy(ref(x_torch), y_torch, label_smoothing=smoothing)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(ref.parameters(), optim["clip_grad_norm"])
        adamw.step()
        synchronize(device)
        return loss.detach(), grad_norm

    m_ours, (loss_ref, norm_ref) = ours(), reference()  # the check doubles as the first warm-up
    checks = dict(loss_ours=float(m_ours["loss"]), loss_ref=float(loss_ref),
                  grad_norm_ours=float(m_ours["grad_norm"]), grad_norm_ref=float(norm_ref))
    timing = measure(ours, reference, args.iters, max(args.warmup - 1, 0), args.wait_quiet)
    row = timing.row(f"train_step/{case}_simpool/b{b}/{s}px/fp32", b, compile_s)
    return dict(row, first_step=checks)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    table = start(args, with_torch=True, settings="fp32, one full train step per call")
    print_header(table, FIRST_STEP_HEADER)
    for case in args.models:
        r = run_case(case, args)
        print_row(table, r, format_first_step(r["first_step"]), args.json)


if __name__ == "__main__":
    main()
