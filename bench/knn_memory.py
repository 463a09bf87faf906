"""Peak host memory of the chunked k-NN (`simpool_jax.evaluate.knn.knn_accuracy`) vs bank size.

Each size runs in a fresh subprocess on random ℓ2-normalised float32 features (D = 384, ViT-S;
1,000 test images, k up to 200, the default chunks) and reports its peak RSS (`ru_maxrss`). The
fixed part (Python, jax) and the per-bank-row slope from a least-squares line over the sizes
extrapolate to ImageNet's 1,281,167 x 384 bank; the features themselves are 1.97 GB of it.

    .venv/bin/python bench/knn_memory.py [--sizes 20000,80000,320000] [--dim 384]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

IMAGENET_TRAIN = 1_281_167

CHILD = """
import resource, sys, numpy as np
from simpool_jax.evaluate.knn import knn_accuracy
n, d = int(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
bank = rng.standard_normal((n, d), dtype=np.float32)
test = rng.standard_normal((1000, d), dtype=np.float32)
knn_accuracy(bank, rng.integers(0, 1000, n), test, rng.integers(0, 1000, 1000), ks=(10, 20, 100, 200))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_bytes(n: int, dim: int) -> int:
    """Peak RSS of one k-NN run on an n x dim bank, in a fresh process."""
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(dim)], capture_output=True,
                         text=True, check=True)
    return int(out.stdout.split()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="20000,80000,320000")
    p.add_argument("--dim", type=int, default=384)
    args = p.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    peaks = [peak_bytes(n, args.dim) for n in sizes]
    mean_n, mean_p = sum(sizes) / len(sizes), sum(peaks) / len(peaks)
    slope = (sum((n - mean_n) * (q - mean_p) for n, q in zip(sizes, peaks))
             / sum((n - mean_n) ** 2 for n in sizes))
    fixed = mean_p - slope * mean_n
    for n, q in zip(sizes, peaks):
        print(f"bank {n:>9,} x {args.dim}: peak RSS {q / 2**30:6.2f} GiB")
    imagenet = fixed + slope * IMAGENET_TRAIN
    print(f"fit: {fixed / 2**30:.2f} GiB + {slope:.0f} B per bank row "
          f"(the features alone: {4 * args.dim} B); ImageNet ({IMAGENET_TRAIN:,} rows): "
          f"{imagenet / 2**30:.2f} GiB")
    print(json.dumps({"sizes": sizes, "peak_bytes": peaks, "bytes_per_row": slope,
                      "imagenet_peak_bytes": imagenet}))


if __name__ == "__main__":
    main()
