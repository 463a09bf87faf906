"""Eval-mode forward throughput (images/s): our Flax SimPool models vs PyTorch timm, same run.

Cases (batch 8, 224 px, fp32 by default): ViT-S/16 + SimPool (gamma 1.25, supervised recipe: the
backbone's final LayerNorm before pooling), ResNet-50 + SimPool (gamma 2.0, no final norm) and
ConvNeXt-S + SimPool (gamma 2.0, LayerNorm after pooling).

Reference: `timm.create_model(<name>, pretrained=False, num_classes=0, global_pool='')` and its
`forward_features`, followed by a PyTorch SimPool written here from the math (see `TorchSimPool`)
and the recipe's final norm. The timm ViT is built with `class_token=False` so that it runs the same
196 tokens as our SimPool ViT, which has no class token (and, at sizes other than 224, with
`dynamic_img_size=True`: timm then resamples its 14 x 14 position embedding every call, as ours
does; timm antialiases when downsampling, ours does not, so features differ below 224 px).
The reference runs in its default NCHW layout under `torch.inference_mode()`; ours is
`jax.jit(lambda v, x: model.apply(v, x)['features'])` on the NHWC transpose of the same images
(layout conversion is outside the timing: each framework gets its native layout).

Same weights, same input: the timm weights are converted into our variables with
`simpool_jax.convert.variables_from_torch` (strict), so both frameworks compute exactly the same
function; the max |ours - reference| of the features is printed as a sanity check.

Fairness of threads: both frameworks run in this one process, on the same cores. `--threads N`
(default 2, this machine's core count) sets `torch.set_num_threads(N)` and, when N is below the
number of usable cores, pins the whole process to N cores with `os.sched_setaffinity` *before*
jax is imported (XLA:CPU sizes its intra-op thread pool from the schedulable CPUs), so both
frameworks may use exactly N cores. `XLA_FLAGS` from the environment is passed through unchanged.

Timing protocol: `--warmup` untimed forwards of each framework, then `--iters` rounds; each round
times one forward of each framework back to back, alternating which goes first (ABBA...), so
machine drift and any order effect hit both equally. Reported: the median s/iter and img/s of
each, the ratio ours/reference of the img/s medians, and the one-time jit compile seconds
(`lower(...).compile()`) of ours. The machine is shared, so the table also gives the 1-min load
average before/after each case and, from /proc/stat minus this process's own CPU time, how many
cores' worth of CPU *other* processes used while the case was timed (about 0 means a clean run;
the load average counts this process's own threads too, so it is not a contention measure).
`--wait-quiet SECONDS` waits before each case for a 5 s window with other processes under 0.1
core. Contention hurts PyTorch's OpenMP far more than XLA's work-stealing pool (seen here: torch
ViT 0.36 s -> 2-3 s per batch under ~1.4 cores of foreign load, ours 0.50 -> 1.4-2.2 s), so only
rows with "other procs" near 0 are a fair comparison.

    .venv/bin/python bench/forward.py                 # table
    .venv/bin/python bench/forward.py --json          # JSON lines on stdout, table on stderr
    .venv/bin/python bench/forward.py --models convnext_small --iters 5 --wait-quiet 600
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

CASES = {
    # name: (our backbone, timm model, gamma, final-norm placement)
    "vit_small": ("vit_small", "vit_small_patch16_224", 1.25, "before"),
    "resnet50": ("resnet50", "resnet50", 2.0, "none"),
    "convnext_small": ("convnext_small", "convnext_small", 2.0, "after"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--models", default=",".join(CASES),
                   help=f"comma-separated subset of {','.join(CASES)}")
    p.add_argument("--iters", type=int, default=10, help="timed rounds (one forward each)")
    p.add_argument("--warmup", type=int, default=2, help="untimed forwards per framework")
    p.add_argument("--threads", type=int, default=2, help="cores for both frameworks")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout, table on stderr")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each case, wait up to SECONDS for a 5 s window in which other "
                        "processes use < 0.1 core (the machine is shared)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in CASES:
            p.error(f"unknown model {m!r}; choose from {sorted(CASES)}")
    return args


def limit_cores(threads: int) -> str:
    """Pin the process to `threads` cores if fewer than available (before importing jax)."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])
        return f"pinned to cores {cpus[:threads]} of {cpus}"
    return f"all {len(cpus)} cores {cpus}"


def build_reference(case: str, image_size: int):
    """The PyTorch reference: timm forward_features + SimPool + the recipe's final norm."""
    import torch
    from torch import nn

    from simpool_jax.convert.torch_env import import_timm

    timm = import_timm()
    _, timm_name, gamma, norm = CASES[case]

    class TorchSimPool(nn.Module):
        """SimPool from the math: GAP query on raw tokens, LN keys/values, gamma power mean."""

        def __init__(self, dim: int, gamma: float, eps: float = 1e-6):
            super().__init__()
            self.gamma, self.eps = gamma, eps
            self.norm_patches = nn.LayerNorm(dim, eps=1e-6)
            self.wq = nn.Linear(dim, dim, bias=False)
            self.wk = nn.Linear(dim, dim, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, D) -> (B, D)
            u0 = x.mean(dim=1)
            z = self.norm_patches(x)
            q, k = self.wq(u0), self.wk(z)
            a = torch.softmax(torch.einsum("bd,bnd->bn", q, k) * x.shape[-1] ** -0.5, dim=-1)
            v = z - z.min() + self.eps  # minimum over the whole batch (official)
            return torch.einsum("bn,bnd->bd", a, v.pow(self.gamma)).pow(1.0 / self.gamma)

    class Reference(nn.Module):
        def __init__(self):
            super().__init__()
            kwargs = dict(pretrained=False, num_classes=0, global_pool="")
            if timm_name.startswith("vit"):
                kwargs.update(class_token=False)
                if image_size != 224:  # resample the 14 x 14 pos_embed per call, as ours does
                    kwargs.update(dynamic_img_size=True)
            self.backbone = timm.create_model(timm_name, **kwargs)
            dim = self.backbone.num_features
            self.pool = TorchSimPool(dim, gamma)
            self.norm = nn.LayerNorm(dim, eps=1e-6) if norm == "after" else nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.backbone.forward_features(x)  # ViT: (B, N, D), final norm applied
            if f.ndim == 4:
                f = f.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, HW, C), row-major
            return self.norm(self.pool(f))

    return Reference().eval()


def reference_state_dict_for_ours(case: str, ref) -> dict:
    """The reference's tensors under the timm names our converter expects."""
    family_prefix = {"vit_small": "gp.pool", "resnet50": "global_pool.pool",
                     "convnext_small": "head.global_pool.pool"}[case]
    out = {}
    for key, value in ref.state_dict().items():
        if key.startswith("backbone."):
            key = key[len("backbone."):]
            if case == "convnext_small" and key.startswith("head."):
                continue  # timm's own head.norm is unused: the bench's `norm` plays its part
        elif key.startswith("pool."):
            key = family_prefix + key[len("pool"):]
        elif key.startswith("norm."):
            key = "head." + key
        out[key] = value
    return out


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have used so far (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def wait_quiet(max_wait: float, window: float = 5.0, threshold: float = 0.1) -> float | None:
    """Wait (up to max_wait s) until other processes use < threshold cores over `window` s.

    Returns the last window's other-process load (cores), or None without /proc/stat.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy0, own0 = busy_cpu_seconds(), own_cpu_seconds()
        time.sleep(window)
        busy1, own1 = busy_cpu_seconds(), own_cpu_seconds()
        if busy0 is None or busy1 is None:
            return None
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / window
        if others < threshold or time.monotonic() >= deadline:
            return others


def time_call(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run_case(case: str, args: argparse.Namespace) -> dict:
    """Build both models, check they agree, time them interleaved; returns the row."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from simpool_jax.convert import variables_from_torch
    from simpool_jax.model import build_model

    backbone, _, gamma, norm = CASES[case]
    torch.manual_seed(0)
    ref = build_reference(case, args.image_size)
    model = build_model(dict(backbone=backbone, pooling="simpool", recipe="supervised",
                             pooling_kwargs=dict(gamma=gamma)))
    assert model.norm == norm, (model.norm, norm)
    variables = variables_from_torch(model, reference_state_dict_for_ours(case, ref), "timm")
    variables = jax.device_put(variables)

    rng = np.random.default_rng(0)
    b, s = args.batch_size, args.image_size
    images_nchw = rng.standard_normal((b, 3, s, s), dtype=np.float32)
    x_torch = torch.from_numpy(images_nchw)
    x_jax = jax.device_put(jnp.asarray(images_nchw.transpose(0, 2, 3, 1)))

    forward = jax.jit(lambda v, x: model.apply(v, x)["features"])
    t0 = time.perf_counter()
    compiled = forward.lower(variables, x_jax).compile()
    compile_s = time.perf_counter() - t0

    def ours():
        return jax.block_until_ready(compiled(variables, x_jax))

    def reference():
        with torch.inference_mode():
            return ref(x_torch)

    if args.wait_quiet > 0:
        wait_quiet(args.wait_quiet)
    load_before = os.getloadavg()
    for _ in range(args.warmup):
        out_ours, out_ref = ours(), reference()
    if args.warmup == 0:
        out_ours, out_ref = ours(), reference()
    max_diff = float(np.max(np.abs(np.asarray(out_ours) - out_ref.numpy())))
    scale = float(np.max(np.abs(out_ref.numpy())))

    t_ours, t_ref = [], []
    busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    for i in range(args.iters):
        if i % 2 == 0:
            t_ours.append(time_call(ours))
            t_ref.append(time_call(reference))
        else:
            t_ref.append(time_call(reference))
            t_ours.append(time_call(ours))
    load_after = os.getloadavg()
    busy1, own1, wall1 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    # Cores' worth of CPU that *other* processes used while we timed (0 = machine was ours).
    others = (None if busy0 is None or busy1 is None
              else max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0))
    med_ours, med_ref = statistics.median(t_ours), statistics.median(t_ref)
    return dict(
        case=f"forward/{case}_simpool/b{b}/{s}px/fp32",
        ours=b / med_ours, reference=b / med_ref, unit="img/s",
        ratio=(b / med_ours) / (b / med_ref), compile_s=compile_s,
        # table-only extras
        _s_ours=med_ours, _s_ref=med_ref, _range_ours=(min(t_ours), max(t_ours)),
        _range_ref=(min(t_ref), max(t_ref)), _max_diff=max_diff, _scale=scale,
        _load=(load_before[0], load_after[0]), _others=others,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cores = limit_cores(args.threads)
    import jax
    import torch

    torch.set_num_threads(args.threads)
    table = sys.stderr if args.json else sys.stdout
    print(f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__}; "
          f"threads={args.threads}, {cores}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; "
          f"batch {args.batch_size}, {args.image_size} px, fp32, warmup {args.warmup}, "
          f"{args.iters} interleaved timed iters; load avg {os.getloadavg()}", file=table)
    header = (f"{'case':<42} {'ours s/it':>9} {'ref s/it':>9} {'ours img/s':>10} "
              f"{'ref img/s':>9} {'ratio':>6} {'compile s':>9}  ours min-max / ref min-max (s)"
              f"   max|diff| (max|ref|)  load1 before->after  other procs (cores)")
    print(header, file=table, flush=True)
    for case in args.models:
        r = run_case(case, args)
        print(f"{r['case']:<42} {r['_s_ours']:9.3f} {r['_s_ref']:9.3f} {r['ours']:10.2f} "
              f"{r['reference']:9.2f} {r['ratio']:6.2f} {r['compile_s']:9.1f}  "
              f"{r['_range_ours'][0]:.3f}-{r['_range_ours'][1]:.3f} / "
              f"{r['_range_ref'][0]:.3f}-{r['_range_ref'][1]:.3f}   "
              f"{r['_max_diff']:.1e} ({r['_scale']:.1e})  "
              f"{r['_load'][0]:.2f}->{r['_load'][1]:.2f}  "
              f"{'n/a' if r['_others'] is None else format(r['_others'], '.2f')}",
              file=table, flush=True)
        if args.json:
            print(json.dumps({k: v for k, v in r.items() if not k.startswith("_")}), flush=True)


if __name__ == "__main__":
    main()
