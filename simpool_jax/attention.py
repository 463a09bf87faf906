"""python -m simpool_jax.attention: a checkpoint's attention over images, and its foreground IoU.

    python -m simpool_jax.attention --checkpoint workdirs/main --images a.png b.jpg --out att
    python -m simpool_jax.attention --checkpoint vits.pth --images cat.jpg --size 896 --out att
    python -m simpool_jax.attention --checkpoint workdirs/main --dataset fashion_mnist --out att

--checkpoint: a train.py workdir (DINO: the teacher), a model directory from
`python -m simpool_jax.convert`, or an official .pth / .pth.tar.

Images: each file is read with PIL (grayscale and palette images become RGB), resized (bicubic,
aspect ratio ignored, as the SimPool authors' demo) to --size x --size and normalised as the
checkpoint's run normalised its eval images (ImageNet mean / std when the checkpoint records
nothing, with a note). Each gives <out>/<name>_<source>.png: the image with the attention map
overlaid (viridis, token map nearest-upsampled as in DINO's figures), --size pixels square.
--size defaults to the run's training resolution, else 224; ViTs take larger sizes (the paper's
figures use 896) through the position-embedding resampling; it must be a multiple of the patch.

--dataset fashion_mnist: the mean foreground IoU over the test split (the thresholded map against
the raw image's non-black pixels, `simpool_jax.evaluate.foreground`), printed and written to
<out>/fashion_mnist_iou.json, with <out>/fashion_mnist_attention.png showing the first 8 images.

--source: auto (the pooler's attention if it has one, else the mean last-layer CLS attention of a
CLS ViT, else token_norm: the per-token l2 norm, a stand-in for poolers without attention such as
GAP), or one of pooler, cls, token_norm.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_SIZE = 224
FIGURE_IMAGES = 8


def recorded_preprocessing(record: dict) -> tuple[tuple, tuple, int | None, str | None]:
    """(mean, std, training size or None, note or None) from a checkpoint's record.

    A train workdir records its config: the normalize op of its k-NN / eval / train pp and its
    image_size. Model directories of official checkpoints record neither: ImageNet statistics
    (what the official models were trained with) and a note saying so.
    """
    from simpool_jax.data.ops.general import stats
    from simpool_jax.data.registry import parse_op, split_spec

    config = record.get("source", {}).get("train_config") or {}
    size = config.get("image_size")
    for keys in (("knn", "test"), ("eval_input",), ("input",)):
        section = config
        for key in keys:
            section = (section or {}).get(key)
        for piece in split_spec((section or {}).get("pp") or ""):
            name, args, kwargs = parse_op(piece)
            if name == "normalize":
                mean = kwargs.get("mean", args[0] if args else "imagenet")
                mean, std = stats(mean, kwargs.get("std", args[1] if len(args) > 1 else None))
                return tuple(mean), tuple(std), size, None
    mean, std = stats("imagenet")
    return mean, std, size, "the checkpoint records no normalisation: using ImageNet mean / std"


def patch_size(model) -> int | None:
    """The ViT patch size (the input size must be a multiple of it); None for CNNs."""
    from simpool_jax.models import backbone_family, get_backbone

    if backbone_family(model.backbone) != "vit":
        return None
    return get_backbone(model.backbone, **model.backbone_kwargs).patch_size


def load_image(path: str, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB of an image file, resized bicubic; unreadable -> ValueError."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB").resize((size, size), Image.BICUBIC)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from None
    return np.asarray(rgb)


def output_names(paths: list[str], source: str) -> list[str]:
    """<stem>_<source>.png per image; a repeated stem gets its position appended."""
    stems = [Path(p).stem for p in paths]
    return [f"{s}_{source}.png" if stems.count(s) == 1 else f"{s}_{i}_{source}.png"
            for i, s in enumerate(stems)]


def draw_images(model, variables, paths: list[str], size: int, mean, std, source: str,
                out: Path) -> list[Path]:
    """Overlay PNGs of `paths` at `size` px in `out` (every image is read before any is written)."""
    from simpool_jax.evaluate.attention import save_overlay_png
    from simpool_jax.evaluate.foreground import attention_maps

    pixels = np.stack([load_image(p, size) for p in paths])
    images = ((pixels / 255.0 - np.asarray(mean)) / np.asarray(std)).astype(np.float32)
    maps, grid, source = attention_maps(model, variables, images, source)
    written = []
    for image, attention, name in zip(pixels, maps, output_names(paths, source)):
        written.append(save_overlay_png(image, attention, grid, out / name))
        print(f"wrote {written[-1]} ({source} attention, {grid[0]}x{grid[1]} tokens, {size} px)")
    return written


def dataset_iou(model, variables, args, size: int, mean, std, out: Path) -> dict:
    """Mean foreground IoU on Fashion-MNIST test; JSON and a figure of the first images."""
    import jax

    from simpool_jax.data import make_eval_iterator
    from simpool_jax.evaluate.attention import save_attention_grid
    from simpool_jax.evaluate.foreground import attention_maps, fashion_mnist_iou
    from simpool_jax.parallel import make_mesh

    pp = f"decode(3)|resize({size})|normalize({tuple(mean)!r}, {tuple(std)!r})"
    mesh = make_mesh((("data", -1),))
    result = fashion_mnist_iou(model, variables, split="test", limit=args.limit, pp=pp,
                               batch_size=args.batch_size, mass=args.mass, source=args.source,
                               data_dir=args.data_dir, mesh=mesh)
    print(f"mean foreground IoU {result['mean_iou']:.4f} over {result['n']} Fashion-MNIST test "
          f"images ({result['source']} attention, mass {result['mass']}, {size} px)")
    report = {"checkpoint": str(args.checkpoint), "dataset": "fashion_mnist", "split": "test",
              "pp": pp, **result}
    out.mkdir(parents=True, exist_ok=True)
    (out / "fashion_mnist_iou.json").write_text(json.dumps(report, indent=2) + "\n")
    batch = -(-FIGURE_IMAGES // jax.device_count()) * jax.device_count()
    config = dict(name="fashion_mnist", split="test", batch_size=batch, pp=pp,
                  data_dir=args.data_dir, limit=args.limit)
    first = jax.device_get(next(iter(make_eval_iterator(config, mesh))))
    shown = min(int(np.asarray(first["mask"]).sum()), FIGURE_IMAGES)
    images = np.asarray(first["image"])[:shown]
    maps, grid, source = attention_maps(model, variables, images, result["source"])
    title = f"{source} attention, foreground IoU {result['mean_iou']:.3f}"
    figure = save_attention_grid(images, maps, grid, out / "fashion_mnist_attention.png", title)
    print(f"wrote {out / 'fashion_mnist_iou.json'} and {figure}")
    return report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line (module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m simpool_jax.attention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="train workdir, model directory or .pth")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--images", nargs="+", help="image files (PNG, JPEG, ...)")
    what.add_argument("--dataset", choices=["fashion_mnist"],
                      help="foreground IoU on its test split")
    parser.add_argument("--out", required=True, help="folder for the PNGs (and the IoU JSON)")
    parser.add_argument("--size", type=int, help="input size in px (default: the run's, else 224; "
                                                 "Fashion-MNIST: the run's, else 28)")
    parser.add_argument("--source", default="auto", choices=["auto", "pooler", "cls", "token_norm"])
    parser.add_argument("--mass", type=float, default=0.6,
                        help="--dataset: the IoU keeps the top tokens holding this share of "
                             "each map (DINO's threshold)")
    parser.add_argument("--limit", type=int, help="--dataset: first N test images only")
    parser.add_argument("--batch-size", type=int, default=256, help="--dataset: images per batch")
    parser.add_argument("--data-dir", help="--dataset: TFDS data_dir")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the checkpoint, draw or measure. Returns the exit code."""
    args = parse_args(argv)
    from simpool_jax.checkpoint import load_model

    try:
        if not Path(args.checkpoint).exists():
            raise FileNotFoundError(f"checkpoint {args.checkpoint} does not exist")
        model, variables, record = load_model(args.checkpoint)
        mean, std, trained_size, note = recorded_preprocessing(record)
        if note:
            print(f"note: {note}", file=sys.stderr)
        size = args.size or trained_size or (28 if args.dataset else DEFAULT_SIZE)
        patch = patch_size(model)
        if size <= 0:
            raise ValueError(f"--size must be positive, got {size}")
        if patch and size % patch:
            raise ValueError(f"--size {size} is not a multiple of the ViT's patch size {patch}")
        if args.dataset:
            dataset_iou(model, variables, args, size, mean, std, Path(args.out))
        else:
            draw_images(model, variables, args.images, size, mean, std, args.source, Path(args.out))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
