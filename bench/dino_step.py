"""DINO train-step throughput (images/s): our jitted step vs the same step in PyTorch, same run.

One step = teacher forward on the global crops, student forward on all crops (one backbone call
per resolution, the head once), the DINO loss (centring, teacher / student temperatures),
backward, per-tensor gradient clipping, AdamW with per-step lr and weight decay, the teacher EMA
and the centre update. Images/s counts source images (each = 2 global + n local crops). Cases:
  vit_small  ViT-S/16 + SimPool (gamma 1.25, beta), DINO head (out_dim 65536, no BN,
             norm_last_layer False), 2 x 224 + 6 x 96 crops, batch 4 (PERF_ANCHORS.md measures
             the official code at B = 4 and 8): the SimPool ViT-S command's settings
             (SIMPOOL.md §4.2) at epoch 10 (past the warmup and the last-layer freeze), but with
             DINO's default per-tensor clipping at 3.0 (the SimPool command has none);
  fmnist     the main job, configs/fmnist_dino.py: its ViT (width 96, depth 4, patch 4), head,
             crops (2 x 28 + 4 x 12), batch 64, optimizer and DINO settings, past the warmup.
Drop path is off in both frameworks (its random masks would make the two first-step losses
incomparable; the recipes put 0.1 on the student, a negligible share of the step's time).

Ours: `simpool_jax.train.dino.make_dino_step` with `DinoOptimizer` and the lr / weight-decay /
teacher-momentum schedules the DINO trainer builds (`warmup_cosine`), jitted with the state
donated; the state is a plain dict on the default device (no mesh).
Reference (PyTorch, the official `train_one_epoch` body): student and teacher `DinoViT`s
(bench/torch_reference.py: timm ViT + the official DINO-SimPool forward + PyTorch SimPool + DINO
head), the teacher a copy of the student without gradients; `teacher(crops[:2])`,
`student(crops)`, DINOLoss as the official code (world size 1), `loss.item()`,
`zero_grad`, `backward`, the official per-tensor `clip_gradients`, `torch.optim.AdamW` on the
official decay groups (biases and 1-D parameters undecayed) with lr / wd set per step from the
same schedule values, then the official EMA loop over `zip(student, teacher)` parameters.

Same weights, same crops: the student's weights are converted into ours with
`simpool_jax.convert.variables_from_torch` (strict, DINO names); teacher = student at the start;
the crops (random, fixed for all steps) are the same arrays (NCHW for torch, NHWC for us); data
loading is not timed. Sanity check: the first step's loss and pre-clipping global gradient norm
of both (|Δ| printed; they agree to ~1e-4 relative or better).

FLOPs: XLA's `cost_analysis()` of our compiled step (all ops, elementwise included; PERF_ANCHORS
counts matmuls only, 102.97 GFLOP per ViT-S image), achieved = FLOPs / our median s per step, and
MFU = achieved / peak, the peak from `--peak-tflops` or, on NVIDIA H100 / H200 / A100, their dense
tensor-core peaks (bf16; fp32 runs as TF32, JAX's default matmul precision on GPU). For the
project's 2-vCPU machine pass `--peak-tflops 0.1984` (PERF_ANCHORS.md §0).

Device-agnostic: runs on whatever `jax.devices()` is; on a GPU the reference runs on CUDA
(`--no-torch` times ours alone where torch has no CUDA). `--dtype bfloat16` / `bfloat16_matmul`:
ours is make_dino_step's compute_dtype (the DINO trainer's `compute_dtype`; `bfloat16`: forward
and backward on bf16 copies of the params and crops; `bfloat16_matmul`: float32 activations, bf16
operands in the products, torch.autocast's numerics; both keep fp32 master weights, loss and
state), the reference under `torch.autocast(bfloat16)` in both.
Threads, timing (ABBA-interleaved rounds), contention column, `--wait-quiet`: bench/common.py.

    .venv/bin/python bench/dino_step.py                     # table
    .venv/bin/python bench/dino_step.py --json              # JSON lines on stdout, table on stderr
    .venv/bin/python bench/dino_step.py --models fmnist --iters 10 --wait-quiet 600
    .venv/bin/python bench/dino_step.py --models vit_small --batch-size 8 --peak-tflops 0.1984
    python bench/dino_step.py --models vit_small --batch-size 64 --dtype bfloat16   # on a GPU
"""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

# First: `common` sets the environment defaults that jax / torch / timm read at import.
from common import (FIRST_STEP_HEADER, bench_parser, format_first_step, measure, parse_bench_args,
                    print_header, print_row, start)

FMNIST_EXAMPLES = 60_000
IMAGENET_EXAMPLES = 1_281_167
# Dense peak TFLOP/s per device-kind substring: (float32 as TF32, bfloat16); SXM parts.
GPU_PEAK_TFLOPS = {"H100": (494.7, 989.4), "H200": (494.7, 989.4), "A100": (156.0, 312.0)}

CASES = {
    "vit_small": dict(
        model=dict(backbone="vit_small", pooling="simpool",
                   pooling_kwargs=dict(gamma=1.25, use_beta=True), recipe="dino", head="dino",
                   head_kwargs=dict(out_dim=65536, use_bn=False, norm_last_layer=False,
                                    hidden_dim=2048, bottleneck_dim=256)),
        batch_size=4, global_size=224, local_size=96, n_local=6, num_examples=IMAGENET_EXAMPLES,
        total_epochs=100,
        optim=dict(name="adamw", lr=5e-4, min_lr=1e-5, warmup_epochs=10, weight_decay=0.04,
                   weight_decay_end=0.4),
        dino=dict(student_temp=0.1, teacher_temp=0.07, warmup_teacher_temp=0.04,
                  warmup_teacher_temp_epochs=30, center_momentum=0.9, clip_grad=3.0,
                  freeze_last_layer_epochs=1, momentum_teacher=0.996)),
    "fmnist": "configs/fmnist_dino.py",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (module docstring)."""
    p = bench_parser(__doc__, CASES)
    p.add_argument("--batch-size", type=int, default=0, help="override the case's batch size")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "bfloat16_matmul"), default="float32",
                   help="ours: make_dino_step's compute_dtype; the reference: float32, or "
                        "torch.autocast(bfloat16) for both bf16 modes")
    p.add_argument("--no-torch", action="store_true", help="time ours alone")
    p.add_argument("--peak-tflops", type=float, default=0.0,
                   help="device peak for MFU (default: known GPUs only)")
    return parse_bench_args(p, argv, CASES, iters=3, warmup=1)


def case_config(case: str, batch_size: int) -> dict:
    """The case's settings, drop path off, epochs turned into steps as the DINO trainer does."""
    spec = CASES[case]
    if isinstance(spec, str):  # the main job's config
        from configs.fmnist_dino import get_config

        config = get_config("simpool")
        crops = {k: int(v) for k, v in
                 re.findall(r"(global_size|local_size|n_local)=(\d+)", config.input.pp)}
        spec = dict(model=config.model.to_dict(), batch_size=config.input.batch_size,
                    num_examples=FMNIST_EXAMPLES, total_steps=config.total_steps,
                    optim=config.optim.to_dict(), dino=config.dino.to_dict(), **crops)
    spec = dict(spec, batch_size=batch_size or spec["batch_size"])
    spec["model"] = dict(spec["model"], backbone_kwargs=dict(
        spec["model"].get("backbone_kwargs") or {}, drop_path_rate=0.0))
    steps_per_epoch = max(spec["num_examples"] // spec["batch_size"], 1)
    total = spec.get("total_steps") or spec["total_epochs"] * steps_per_epoch
    if not spec["dino"]["clip_grad"]:
        raise ValueError(f"case {case}: the bench times a clipped step; set dino.clip_grad")
    return dict(spec, steps_per_epoch=steps_per_epoch, total_steps=total,
                warmup_steps=int(round(spec["optim"]["warmup_epochs"] * steps_per_epoch)))


def schedules(config: dict) -> dict:
    """lr (scaled by batch / 256), weight decay and teacher momentum per step (dino_trainer)."""
    from simpool_jax.train.optim import warmup_cosine

    o, total = config["optim"], config["total_steps"]
    return {"lr": warmup_cosine(o["lr"] * config["batch_size"] / 256.0, total,
                                config["warmup_steps"], o.get("min_lr", 0.0)),
            "wd": warmup_cosine(o["weight_decay"], total, 0, o["weight_decay_end"]),
            "momentum": warmup_cosine(config["dino"]["momentum_teacher"], total, 0, 1.0)}


class TorchDINOLoss:
    """The official `main_dino.DINOLoss` at world size 1 (centre EMA of the teacher batch mean)."""

    def __init__(self, out_dim: int, n_crops: int, student_temp: float, center_momentum: float,
                 device: Any):
        import torch

        self.n_crops, self.student_temp = n_crops, student_temp
        self.center_momentum = center_momentum
        self.center = torch.zeros(1, out_dim, device=device)

    def __call__(self, student_output, teacher_output, temp: float):
        import torch
        import torch.nn.functional as F

        student_out = (student_output / self.student_temp).chunk(self.n_crops)
        teacher_out = F.softmax((teacher_output - self.center) / temp, dim=-1).detach().chunk(2)
        total_loss, n_loss_terms = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                loss = torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1)
                total_loss += loss.mean()
                n_loss_terms += 1
        total_loss /= n_loss_terms
        with torch.no_grad():
            batch_center = torch.sum(teacher_output, dim=0, keepdim=True) / len(teacher_output)
            m = self.center_momentum
            self.center = self.center * m + batch_center * (1 - m)
        return total_loss


def build_reference(config: dict, device: Any):
    """(student, teacher = a frozen copy, AdamW on the official decay groups) on `device`."""
    import torch
    from torch_reference import DinoViT, timm_vit

    from simpool_jax.convert.torch_env import import_timm

    import_timm()  # timm's import needs the torchvision shim first
    from timm.optim import param_groups_weight_decay

    model = config["model"]
    timm_name, timm_kwargs = timm_vit(model["backbone"], model["backbone_kwargs"])
    pool = model["pooling_kwargs"]

    def build():
        return DinoViT(timm_name, pool["gamma"], pool.get("use_beta", False),
                       model["head_kwargs"], **timm_kwargs).to(device).train()

    student, teacher = build(), build()
    teacher.load_state_dict(student.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    # DINO's get_params_groups: no decay on biases and 1-D tensors (pos_embed decayed).
    groups = param_groups_weight_decay(student, config["optim"]["weight_decay"])
    return student, teacher, torch.optim.AdamW(groups, lr=0.0)


def peak_flops(args: argparse.Namespace, device_kind: str) -> float | None:
    """FLOP/s of the device for MFU: --peak-tflops, else a known GPU's dense peak, else None."""
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    for name, (fp32, bf16) in GPU_PEAK_TFLOPS.items():
        if name in device_kind:
            return (fp32 if args.dtype == "float32" else bf16) * 1e12
    return None


def run_case(case: str, args: argparse.Namespace) -> dict:
    """Build both steps on the same weights and crops, check the first losses, time them."""
    import jax
    import jax.numpy as jnp
    import ml_collections
    import numpy as np

    from simpool_jax.convert import variables_from_torch
    from simpool_jax.heads import DINOHead
    from simpool_jax.model import build_model
    from simpool_jax.train.dino import DinoOptimizer, make_dino_step, teacher_temperature

    config = case_config(case, args.batch_size)
    b, g, loc, n_local = (config[k] for k in ("batch_size", "global_size", "local_size", "n_local"))
    d, optim = config["dino"], config["optim"]
    first = config["warmup_steps"]  # past the warmup: every timed update is a real one
    n_steps = 1 + args.warmup + args.iters
    values = {k: np.asarray(jax.vmap(f)(jnp.arange(first, first + n_steps)))
              for k, f in schedules(config).items()}
    epoch = first // config["steps_per_epoch"]  # constant over the few steps timed
    temp = float(teacher_temperature(jnp.asarray(epoch), d["warmup_teacher_temp"],
                                     d["teacher_temp"], d["warmup_teacher_temp_epochs"]))
    if epoch < d["freeze_last_layer_epochs"]:
        raise ValueError("the bench starts past the last-layer freeze: lower "
                         "freeze_last_layer_epochs")

    rng = np.random.default_rng(0)
    crops = {"global": rng.standard_normal((b, 2, g, g, 3), dtype=np.float32),
             "local": rng.standard_normal((b, n_local, loc, loc, 3), dtype=np.float32)}

    model = build_model(config["model"])
    head = DINOHead(**model.head_kwargs)
    reference = None
    if not args.no_torch:
        import torch

        from torch_reference import torch_device

        device = torch_device(jax.devices()[0].platform)
        torch.manual_seed(0)
        student_ref, teacher_ref, adamw = build_reference(config, device)
        params = variables_from_torch(model, student_ref.state_dict_for_ours(), "dino")["params"]
        reference = torch_step(student_ref, teacher_ref, adamw, crops, values, temp, config,
                               args.dtype, device)
    else:
        images = jnp.zeros((1, g, g, 3), jnp.float32)
        params = model.init(jax.random.PRNGKey(0), images)["params"]

    optimizer = DinoOptimizer(optim["name"], optim.get("b1", 0.9), optim.get("b2", 0.999),
                              momentum=optim.get("momentum", 0.9))
    state = jax.device_put({
        "params": params, "batch_stats": {}, "teacher_params": jax.tree.map(jnp.array, params),
        "teacher_batch_stats": {}, "opt": optimizer.init(params),
        "center": jnp.zeros((1, model.head_kwargs["out_dim"]), jnp.float32),
        "step": jnp.asarray(first, jnp.int32)})
    step = make_dino_step(model, model, head, optimizer, schedules(config),
                          ml_collections.ConfigDict({"dino": d}), config["steps_per_epoch"],
                          args.dtype)
    batch, key = jax.device_put(crops), jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=0).lower(state, batch, key).compile()
    compile_s = time.perf_counter() - t0
    flops = (compiled.cost_analysis() or {}).get("flops")
    held = {"state": state}

    def ours():
        held["state"], metrics = compiled(held["state"], batch, key)
        return jax.block_until_ready((held["state"], metrics))[1]

    metrics = ours()  # the check doubles as the first warm-up
    checks = dict(loss_ours=float(metrics["loss"]), grad_norm_ours=float(metrics["grad_norm"]))
    if reference is not None:
        loss_ref, norm_ref = reference()
        checks.update(loss_ref=loss_ref, grad_norm_ref=norm_ref)
    timing = measure(ours, reference, args.iters, max(args.warmup - 1, 0), args.wait_quiet)
    row = timing.row(f"dino_step/{case}_simpool/b{b}/2x{g}+{n_local}x{loc}px/{args.dtype}", b,
                     compile_s)
    achieved = None if flops is None else flops / row["_s_ours"]
    peak = peak_flops(args, jax.devices()[0].device_kind)
    return dict(row, first_step=checks, gflop_per_step=None if flops is None else flops / 1e9,
                achieved_tflops=None if achieved is None else achieved / 1e12,
                mfu=None if achieved is None or peak is None else achieved / peak)


def torch_step(student, teacher, adamw, crops: dict, values: dict, temp: float, config: dict,
               dtype: str, device: Any):
    """The official step as a closure; each call returns (loss, pre-clipping global grad norm)."""
    import math

    import torch
    from torch_reference import synchronize

    def nchw(x):
        return torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).to(device)

    images = ([nchw(crops["global"][:, i]) for i in range(2)]
              + [nchw(crops["local"][:, i]) for i in range(crops["local"].shape[1])])
    d = config["dino"]
    dino_loss = TorchDINOLoss(config["model"]["head_kwargs"]["out_dim"], len(images),
                              d["student_temp"], d["center_momentum"], device)
    decay_group = next(group for group in adamw.param_groups if group["weight_decay"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype != "float32")
    it = {"step": 0}

    def step() -> tuple[float, float]:
        i = it["step"]
        it["step"] += 1
        for group in adamw.param_groups:
            group["lr"] = float(values["lr"][i])
        decay_group["weight_decay"] = float(values["wd"][i])
        with autocast:
            teacher_output = teacher(images[:2])
            student_output = student(images)
            loss = dino_loss(student_output, teacher_output, temp)
        loss_value = loss.item()
        if not math.isfinite(loss_value):
            raise FloatingPointError(f"reference loss is {loss_value}")
        adamw.zero_grad()
        loss.backward()
        norms = []  # the official utils.clip_gradients, per parameter tensor
        for p in student.parameters():
            if p.grad is not None:
                param_norm = p.grad.data.norm(2)
                norms.append(param_norm.item())
                clip_coef = d["clip_grad"] / (param_norm + 1e-6)
                if clip_coef < 1:
                    p.grad.data.mul_(clip_coef)
        adamw.step()
        with torch.no_grad():
            m = float(values["momentum"][i])
            for param_q, param_k in zip(student.parameters(), teacher.parameters()):
                param_k.data.mul_(m).add_((1 - m) * param_q.detach().data)
        synchronize(device)
        return loss_value, math.sqrt(sum(n * n for n in norms))

    return step


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    table = start(args, with_torch=not args.no_torch,
                  settings=f"{args.dtype}, one full DINO step per call")
    print_header(table, f"{FIRST_STEP_HEADER}   GFLOP/step  ours TFLOP/s  MFU")
    tolerance = 1e-3 if args.dtype == "float32" else 3e-2  # of the first-step check
    for case in args.models:
        r = run_case(case, args)
        flops = ("-" if r["gflop_per_step"] is None
                 else f"{r['gflop_per_step']:.1f}  {r['achieved_tflops']:.4f}")
        mfu = "-" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
        print_row(table, r, f"{format_first_step(r['first_step'], tolerance)}   {flops}  {mfu}", args.json)


if __name__ == "__main__":
    main()
