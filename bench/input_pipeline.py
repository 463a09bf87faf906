"""Input-pipeline throughput (images/s): our tf.data pipeline vs the official PyTorch recipe, same run.

Data: a folder of JPEGs that this script writes itself (`--images`, default 200, like the PyTorch
anchor in research/PERF_ANCHORS.md): random crops of the real colour photos in skimage.data,
resized to 500 x 375 (a typical ImageNet size), quality 90, 6 classes (one per photo).

Cases:
  dino        2 x 224 + 6 x 96 crops, ViT-S command scales (0.25, 1) / (0.05, 0.25): ours is
              `decode|dino_multicrop(...)`; the reference is DINO's `DataAugmentationDINO` rebuilt from
              torchvision transforms (RandomResizedCrop bicubic, flip, RandomApply(ColorJitter(0.4, 0.4,
              0.2, 0.1), 0.8), RandomGrayscale(0.2), PIL GaussianBlur / solarize, ToTensor, Normalize).
  supervised  RandomResizedCrop(224) + flip + normalise, bilinear on both sides (torchvision's
              default; the official timm recipe draws bilinear or bicubic at random): ours
              `decode_rrc(224, method='bilinear')|flip_lr|normalize`, which decodes only the crop
              window of each JPEG, the reference torchvision's on PIL images.
Reference loader: `torch.utils.data.DataLoader(batch_size, num_workers=W, shuffle, drop_last,
persistent_workers)` over PIL-loaded files (the official code's ImageFolder path); ours: the host
tf.data pipeline of `simpool_jax.data.pipeline.train_dataset` (source -> shuffle -> decode -> pp ->
batch), which uses the machine's cores through tf.data's thread pool. Both get the same cores; W
defaults to the number of usable cores, so "per core" ratios equal the img/s ratios.

Timing: both pipelines stay alive; rounds alternate ours / reference (ABBA...). A round first draws
`--skip` batches untimed (drains whatever the pipeline prefetched while the other one ran), then
times `--batches` batches. Reported: median img/s over `--rounds` rounds of each, the ratio of the
medians, and the 1-min load average before/after each case (the machine may be shared).

    .venv/bin/python bench/input_pipeline.py               # table
    .venv/bin/python bench/input_pipeline.py --json        # JSON lines on stdout, table on stderr
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageFilter, ImageOps  # noqa: E402

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry")


def write_jpegs(root: str, n: int) -> None:
    """n JPEGs of 500 x 375 in root/train/<photo>/ from random crops of skimage's colour photos."""
    import skimage.data

    rng = np.random.RandomState(0)
    photos = {name: getattr(skimage.data, name)() for name in PHOTOS}
    for i in range(n):
        name = PHOTOS[i % len(PHOTOS)]
        img = photos[name]
        h, w = img.shape[:2]
        ch, cw = rng.randint(h // 2, h + 1), rng.randint(w // 2, w + 1)
        y, x = rng.randint(0, h - ch + 1), rng.randint(0, w - cw + 1)
        os.makedirs(os.path.join(root, "train", name), exist_ok=True)
        crop = Image.fromarray(img[y:y + ch, x:x + cw]).resize((500, 375), Image.BICUBIC)
        crop.save(os.path.join(root, "train", name, f"{i:04d}.jpg"), quality=90)


def ours(root: str, spec: str, batch: int):
    from simpool_jax.data.pipeline import train_dataset
    from simpool_jax.data.sources import get_dataset

    source = get_dataset(f"folder:{root}", "train", process_index=0, process_count=1)
    return train_dataset(source, spec, batch, shuffle_buffer=1000).as_numpy_iterator()


class _GaussianBlur:
    """DINO's GaussianBlur: with probability p, PIL GaussianBlur of radius ~ U(0.1, 2)."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, img):
        if np.random.rand() >= self.p:
            return img
        return img.filter(ImageFilter.GaussianBlur(radius=np.random.uniform(0.1, 2.0)))


class _Solarize:
    def __init__(self, p: float):
        self.p = p

    def __call__(self, img):
        return ImageOps.solarize(img) if np.random.rand() < self.p else img


def dino_transform(T, global_scale, local_scale, n_local):
    """DINO's DataAugmentationDINO (main_dino.py), from torchvision transforms and PIL."""
    flip_color = T.Compose([T.RandomHorizontalFlip(0.5),
                            T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8), T.RandomGrayscale(0.2)])
    norm = T.Compose([T.ToTensor(), T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    bicubic = T.InterpolationMode.BICUBIC
    g1 = T.Compose([T.RandomResizedCrop(224, global_scale, interpolation=bicubic), flip_color, _GaussianBlur(1.0), norm])
    g2 = T.Compose([T.RandomResizedCrop(224, global_scale, interpolation=bicubic), flip_color, _GaussianBlur(0.1),
                    _Solarize(0.2), norm])
    loc = T.Compose([T.RandomResizedCrop(96, local_scale, interpolation=bicubic), flip_color, _GaussianBlur(0.5), norm])
    return lambda img: [g1(img), g2(img)] + [loc(img) for _ in range(n_local)]


class _Files:
    """ImageFolder's loading path: PIL open + convert("RGB"), then the transform."""

    def __init__(self, root: str, transform):
        self.items = sorted((os.path.join(d, f), i) for i, (d, _, fs) in enumerate(sorted(os.walk(root))) for f in fs)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.transform(img), label


def reference(root: str, case: str, batch: int, workers: int):
    import torch

    from simpool_jax.convert.torch_env import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torchvision.transforms as T

    if case == "dino":
        transform = dino_transform(T, (0.25, 1.0), (0.05, 0.25), 6)
    else:
        transform = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                               T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    loader = torch.utils.data.DataLoader(_Files(os.path.join(root, "train"), transform), batch_size=batch,
                                         num_workers=workers, shuffle=True, drop_last=True, persistent_workers=True)

    def forever():
        while True:
            yield from loader

    return forever()


SPECS = {
    "dino": "decode|dino_multicrop(224, 96, 6, global_scale=(0.25, 1.0), local_scale=(0.05, 0.25))",
    "supervised": "decode_rrc(224, method='bilinear')|flip_lr|normalize('imagenet')",
}


def timed_round(it, skip: int, batches: int, batch: int) -> float:
    for _ in range(skip):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="dino,supervised")
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip", type=int, default=8)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = sys.stderr if args.json else sys.stdout
    rows = []
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(root, args.images)
        for case in args.cases.split(","):
            load0 = os.getloadavg()[0]
            a, b = ours(root, SPECS[case], args.batch), reference(root, case, args.batch, args.workers)
            timed_round(a, args.skip, 1, args.batch), timed_round(b, args.skip, 1, args.batch)  # warm up
            speeds = {"ours": [], "reference": []}
            for r in range(args.rounds):
                order = [("ours", a), ("reference", b)] if r % 2 == 0 else [("reference", b), ("ours", a)]
                for name, it in order:
                    speeds[name].append(timed_round(it, args.skip, args.batches, args.batch))
            med = {k: statistics.median(v) for k, v in speeds.items()}
            rows.append((case, med, speeds, load0, os.getloadavg()[0]))
            if args.json:
                print(json.dumps({"case": case, "ours": round(med["ours"], 2), "reference": round(med["reference"], 2),
                                  "unit": "img/s", "ratio": round(med["ours"] / med["reference"], 3)}), flush=True)
            del a, b
    print(f"{args.images} JPEGs 500x375, batch {args.batch}, reference DataLoader workers {args.workers}, "
          f"{len(os.sched_getaffinity(0))} cores; median of {args.rounds} rounds x {args.batches} batches", file=out)
    print(f"{'case':<11} {'ours img/s':>11} {'torch img/s':>12} {'ratio':>6}   ours min-max   torch min-max   load 1-min",
          file=out)
    for case, med, speeds, l0, l1 in rows:
        print(f"{case:<11} {med['ours']:>11.1f} {med['reference']:>12.1f} {med['ours'] / med['reference']:>6.2f}   "
              f"{min(speeds['ours']):>5.1f}-{max(speeds['ours']):<6.1f}  {min(speeds['reference']):>5.1f}-"
              f"{max(speeds['reference']):<6.1f}  {l0:.1f} -> {l1:.1f}", file=out)


if __name__ == "__main__":
    main()
