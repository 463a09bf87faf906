"""ConvNeXt's 7x7 depthwise conv on XLA:CPU vs PyTorch: why ConvNeXt-S is slow in `forward.py`.

Times, for the four ConvNeXt-S stage shapes (batch 8 at 224 px by default):
  xla_conv   - `lax.conv_general_dilated(..., feature_group_count=C)`, what `nn.Conv` emits
               (XLA:CPU hands it to YNNPACK by default: `__ynn_fusion` in the compiled HLO);
  xla_shift  - the same conv as 49 shifted multiply-adds on the padded NHWC input (one XLA loop
               fusion; identical result up to float rounding, max |diff| printed): what our
               ConvNeXt runs on CPU (`simpool_jax.models.layers.DepthwiseConv`);
  torch      - `nn.Conv2d(C, C, 7, padding=3, groups=C)` in NCHW, and in channels_last.
Both frameworks run in this process on the same cores, timed in blocks of `--iters` calls
(`common.median_ms_in_blocks`), with XLA:CPU's scratch memory kept as in train.py; medians in ms.

    .venv/bin/python bench/dwconv.py [--batch-size 8] [--iters 10] [--threads 2] [--json]
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

from common import limit_cores, median_ms_in_blocks  # noqa: E402

# (spatial size, channels) of the four ConvNeXt-S stages at 224 px, and blocks per stage.
STAGES = ((56, 96, 3), (28, 192, 3), (14, 384, 27), (7, 768, 3))


def xla_conv(x, w):
    import jax

    return jax.lax.conv_general_dilated(x, w, (1, 1), ((3, 3), (3, 3)),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1])


def xla_shift(x, w):
    """The library's CPU path (`simpool_jax.models.layers.depthwise_conv_shifted`)."""
    from simpool_jax.models.layers import depthwise_conv_shifted

    return depthwise_conv_shifted(x, w)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    limit_cores(args.threads)
    from simpool_jax.host_memory import keep_cpu_scratch_memory

    keep_cpu_scratch_memory()
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    out = sys.stderr if args.json else sys.stdout
    print(f"{'stage shape (B,H,W,C)':<24} {'xla_conv':>9} {'xla_shift':>9} {'torch':>7} "
          f"{'torch_cl':>8}  ms (median)   shift max|diff|   x blocks in ConvNeXt-S", file=out)
    totals = dict(xla_conv=0.0, xla_shift=0.0, torch=0.0, torch_cl=0.0)
    rng = np.random.default_rng(0)
    for h, c, blocks in STAGES:
        b = args.batch_size
        x = rng.standard_normal((b, h, h, c), dtype=np.float32)
        w = (0.1 * rng.standard_normal((7, 7, 1, c))).astype(np.float32)
        xj, wj = jnp.asarray(x), jnp.asarray(w)
        conv, shift = jax.jit(xla_conv), jax.jit(xla_shift)
        diff = float(jnp.max(jnp.abs(conv(xj, wj) - shift(xj, wj))))
        tconv = torch.nn.Conv2d(c, c, 7, padding=3, groups=c).eval()
        with torch.no_grad():
            tconv.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1).copy()))
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        xt_cl = xt.contiguous(memory_format=torch.channels_last)
        tconv_cl = torch.nn.Conv2d(c, c, 7, padding=3, groups=c).eval()
        tconv_cl.load_state_dict(tconv.state_dict())
        tconv_cl = tconv_cl.to(memory_format=torch.channels_last)
        fns = dict(
            xla_conv=lambda: conv(xj, wj).block_until_ready(),
            xla_shift=lambda: shift(xj, wj).block_until_ready(),
            torch=lambda: tconv(xt),
            torch_cl=lambda: tconv_cl(xt_cl),
        )
        with torch.inference_mode():
            med = median_ms_in_blocks(fns, args.iters, warmup=2)
        for k in totals:
            totals[k] += blocks * med[k]
        print(f"{str((b, h, h, c)):<24} {med['xla_conv']:9.2f} {med['xla_shift']:9.2f} "
              f"{med['torch']:7.2f} {med['torch_cl']:8.2f}  {'':13} {diff:.1e}   x{blocks}",
              file=out, flush=True)
        if args.json:
            print(json.dumps({"case": f"dwconv7x7/b{b}x{h}x{h}x{c}", "ours": med["xla_conv"],
                              "ours_shift": med["xla_shift"], "reference": med["torch"],
                              "unit": "ms", "ratio": med["xla_conv"] / med["torch"]}), flush=True)
    print(f"{'sum over the 36 blocks':<24} {totals['xla_conv']:9.1f} {totals['xla_shift']:9.1f} "
          f"{totals['torch']:7.1f} {totals['torch_cl']:8.1f}  ms per forward", file=out)


if __name__ == "__main__":
    main()
