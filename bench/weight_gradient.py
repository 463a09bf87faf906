"""Float32 weight gradients of dense layers with few output columns, XLA:CPU vs PyTorch.

For a layer y = a @ w, a (m, k), w (k, n), the weight gradient is a^T g with g = dy (m, n). Times:
  xla_aTg   - a^T g as autodiff writes it (`jax.vjp` of `a @ w`): XLA's own dot;
  ours      - the same gradient through `simpool_jax.models.matmul.matmul`, which on CPU sends a
              narrow weight (n < k, n <= 192, m >= 1024) to `narrow_weight_matmul`: (g^T a)^T,
              the small (n, k) result transposed by a copy; other shapes get XLA's own dot;
  torch     - `a.t() @ g`, what PyTorch's autograd computes for nn.Linear's weight.
ours and xla_aTg give the same numbers (their max |diff| printed). Timed in blocks of `--iters`
calls (`common.median_ms_in_blocks`: at these millisecond sizes a call right after PyTorch's is
slowed by its still-spinning OpenMP threads). Medians in ms and GF/s (2 m k n FLOP).
Cases (m, k, n): the main job's MLP fc2 on the global and local crops (configs/fmnist_dino.py,
batch 64), ConvNeXt-S stage 1 / 2 pointwise conv 2 at batch 8, 224 px; controls that keep XLA's
own dot: the DINO head's 2048 -> 256 bottleneck on 128 images x 10 crops, ViT-S fc2 at the DINO
bench's batch.

    .venv/bin/python bench/weight_gradient.py [--threads 2] [--iters 20] [--json]
"""

from __future__ import annotations

import json

from common import bench_parser, median_ms_in_blocks, parse_bench_args, start

CASES = {
    "fmnist_fc2_global": (6272, 384, 96),
    "fmnist_fc2_local": (2304, 384, 96),
    "convnext_s_stage1_pwconv2": (25088, 384, 96),
    "convnext_s_stage2_pwconv2": (6272, 768, 192),
    "dino_head_bottleneck": (1280, 2048, 256),
    "vit_s_fc2": (2464, 1536, 384),
}


def main(argv: list[str] | None = None) -> None:
    args = parse_bench_args(bench_parser(__doc__, CASES), argv, CASES, iters=20, warmup=2)
    table = start(args, with_torch=True, settings="float32 weight gradient per call")
    import jax
    import numpy as np
    import torch

    from simpool_jax.models.matmul import matmul

    def weight_gradient(product):
        return jax.jit(lambda a, w, g: jax.vjp(lambda w: product(a, w), w)[1](g)[0])

    xla = weight_gradient(lambda a, w: a @ w)
    ours = weight_gradient(matmul)
    print(f"{'case (m, k, n)':<44} {'xla_aTg':>8} {'ours':>8} {'torch':>8}  ms (median)   "
          f"GF/s xla / ours / torch   ours vs xla, vs torch   max|diff|", file=table)
    rng = np.random.default_rng(0)
    for name in args.models:
        m, k, n = CASES[name]
        a, g = (rng.standard_normal(s, dtype=np.float32) for s in ((m, k), (m, n)))
        w = rng.standard_normal((k, n), dtype=np.float32)
        aj, wj, gj = jax.device_put(a), jax.device_put(w), jax.device_put(g)
        at, gt = torch.from_numpy(a), torch.from_numpy(g)
        calls = {"xla_aTg": lambda: xla(aj, wj, gj).block_until_ready(),
                 "ours": lambda: ours(aj, wj, gj).block_until_ready(),
                 "torch": lambda: at.t() @ gt}
        diff = float(np.abs(np.asarray(ours(aj, wj, gj)) - np.asarray(xla(aj, wj, gj))).max())
        med = median_ms_in_blocks(calls, args.iters, args.warmup)
        gflops = {key: 2 * m * k * n / t / 1e6 for key, t in med.items()}
        print(f"{name + ' ' + str((m, k, n)):<44} {med['xla_aTg']:8.2f} {med['ours']:8.2f} "
              f"{med['torch']:8.2f}  {'':13} {gflops['xla_aTg']:5.0f} / {gflops['ours']:4.0f} / "
              f"{gflops['torch']:4.0f}      {med['xla_aTg'] / med['ours']:5.2f}x  "
              f"{med['torch'] / med['ours']:5.2f}x       {diff:.1e}", file=table, flush=True)
        if args.json:
            print(json.dumps({"case": f"weight_gradient/{name}", "ours": med["ours"],
                              "xla_aTg": med["xla_aTg"], "reference": med["torch"], "unit": "ms",
                              "ratio": med["torch"] / med["ours"]}), flush=True)


if __name__ == "__main__":
    main()
