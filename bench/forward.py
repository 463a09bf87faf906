"""Eval-mode forward throughput (images/s): our Flax SimPool models vs PyTorch timm, same run.

Cases (batch 8, 224 px, fp32 by default): ViT-S/16 + SimPool (gamma 1.25, supervised recipe: the
backbone's final LayerNorm before pooling), ResNet-50 + SimPool (gamma 2.0, no final norm) and
ConvNeXt-S + SimPool (gamma 2.0, LayerNorm after pooling).

Reference: `timm.create_model(<name>, pretrained=False, num_classes=0, global_pool='')` and its
`forward_features`, followed by a PyTorch SimPool written from the math and the recipe's final
norm (`SimPoolClassifier` in bench/torch_reference.py). The timm ViT is built with
`class_token=False` so that it runs the same 196 tokens as our SimPool ViT, which has no class
token (and, at sizes other than 224, with
`dynamic_img_size=True`: timm then resamples its 14 x 14 position embedding every call, as ours
does; timm antialiases when downsampling, ours does not, so features differ below 224 px).
The reference runs in its default NCHW layout under `torch.inference_mode()`; ours is
`jax.jit(lambda v, x: model.apply(v, x)['features'])` on the NHWC transpose of the same images
(layout conversion is outside the timing: each framework gets its native layout).

Same weights, same input: the timm weights are converted into our variables with
`simpool_jax.convert.variables_from_torch` (strict), so both frameworks compute exactly the same
function; the max |ours - reference| of the features is printed as a sanity check.

Threads, timing and contention: `bench/common.py` (both frameworks in this one process on the
same `--threads` cores; `--warmup` untimed forwards, then `--iters` rounds alternating which
framework goes first; the "other procs" column is how many cores' worth of CPU other processes
used meanwhile, and `--wait-quiet SECONDS` waits for a quiet machine first). Reported: the median
s/iter and img/s of each, the ratio ours/reference of the img/s medians, and the one-time jit
compile seconds (`lower(...).compile()`) of ours. Contention hurts PyTorch's OpenMP far more than
XLA's work-stealing pool (seen here: torch ViT 0.36 s -> 2-3 s per batch under ~1.4 cores of
foreign load, ours 0.50 -> 1.4-2.2 s), so only rows with "other procs" near 0 are a fair comparison.

    .venv/bin/python bench/forward.py                 # table
    .venv/bin/python bench/forward.py --json          # JSON lines on stdout, table on stderr
    .venv/bin/python bench/forward.py --models convnext_small --iters 5 --wait-quiet 600
"""

from __future__ import annotations

import argparse
import time

# First: `common` sets the environment defaults that jax / torch / timm read at import.
from common import bench_parser, measure, parse_bench_args, print_header, print_row, start

CASES = {
    # name: (our backbone, timm model, gamma, final-norm placement)
    "vit_small": ("vit_small", "vit_small_patch16_224", 1.25, "before"),
    "resnet50": ("resnet50", "resnet50", 2.0, "none"),
    "convnext_small": ("convnext_small", "convnext_small", 2.0, "after"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options (module docstring)."""
    p = bench_parser(__doc__, CASES)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--image-size", type=int, default=224)
    return parse_bench_args(p, argv, CASES, iters=10, warmup=2)


def run_case(case: str, args: argparse.Namespace) -> dict:
    """Build both models, check they agree, time them interleaved; returns the row."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from torch_reference import SimPoolClassifier

    from simpool_jax.convert import variables_from_torch
    from simpool_jax.model import build_model

    backbone, timm_name, gamma, norm = CASES[case]
    torch.manual_seed(0)
    ref = SimPoolClassifier(timm_name, gamma, norm, args.image_size).eval()
    model = build_model(dict(backbone=backbone, pooling="simpool", recipe="supervised",
                             pooling_kwargs=dict(gamma=gamma)))
    assert model.norm == norm, (model.norm, norm)
    variables = jax.device_put(variables_from_torch(model, ref.state_dict_for_ours(model), "timm"))

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

    out_ours, out_ref = ours(), reference()  # the sanity check doubles as the first warm-up
    max_diff = float(np.max(np.abs(np.asarray(out_ours) - out_ref.numpy())))
    scale = float(np.max(np.abs(out_ref.numpy())))
    timing = measure(ours, reference, args.iters, max(args.warmup - 1, 0), args.wait_quiet)
    row = timing.row(f"forward/{case}_simpool/b{b}/{s}px/fp32", b, compile_s)
    return dict(row, _max_diff=max_diff, _scale=scale)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    table = start(args, with_torch=True,
                  settings=f"batch {args.batch_size}, {args.image_size} px, fp32")
    print_header(table, "max|diff| (max|ref|)")
    for case in args.models:
        r = run_case(case, args)
        print_row(table, r, f"{r['_max_diff']:.1e} ({r['_scale']:.1e})", args.json)


if __name__ == "__main__":
    main()
