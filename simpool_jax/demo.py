"""Forward-pass demo: SimPool features and an attention map for a real photo.

    python -m simpool_jax.demo [--image astronaut] [--backbone vit_small] [--out outputs/demo]

Runs a SimPool ViT (DINO wiring) on a photo shipped with scikit-image, prints the pooled
features and writes the SimPool attention map as a PNG. The weights are random (seeded) until a
checkpoint is given, so the map shows the mechanism, not a trained model's object mask.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from simpool_jax.evaluate.attention import save_attention_overlay
from simpool_jax.model import build_model

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def load_photo(name: str, size: int) -> np.ndarray:
    """A colour photo from skimage.data, center-cropped square and resized (bicubic) to `size`."""
    from PIL import Image
    from skimage import data

    if not hasattr(data, name):
        raise SystemExit(f"skimage.data has no image {name!r}; try astronaut, chelsea, coffee, rocket")
    image = getattr(data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    image = image[..., :3]
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = Image.fromarray(image[top:top + side, left:left + side])
    return np.asarray(square.resize((size, size), Image.BICUBIC))


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run one forward pass, print features, save the attention PNG."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="astronaut", help="name of a skimage.data colour photo")
    parser.add_argument("--backbone", default="vit_small")
    parser.add_argument("--gamma", type=float, default=1.25, help="SimPool gamma (<= 0: none)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="outputs/demo")
    args = parser.parse_args(argv)

    gamma = args.gamma if args.gamma > 0 else None
    model = build_model(dict(backbone=args.backbone, pooling="simpool", recipe="dino",
                             pooling_kwargs=dict(gamma=gamma, use_beta=gamma is not None)))
    image = load_photo(args.image, args.size)
    x = jnp.asarray(((image / 255.0 - IMAGENET_MEAN) / IMAGENET_STD)[None], jnp.float32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(args.seed), x)
    start = time.perf_counter()
    out = jax.block_until_ready(jax.jit(model.apply)(variables, x))
    seconds = time.perf_counter() - start
    features = np.asarray(out["features"][0])
    n_tokens = out["tokens"].shape[1]
    grid = (args.size // 16, args.size // 16) if args.backbone.startswith("vit") else None
    grid = grid or (int(np.sqrt(n_tokens)),) * 2
    print(f"{args.backbone} + SimPool (gamma={gamma}), random init (seed {args.seed}), "
          f"{args.image} at {args.size}px: compiled and ran in {seconds:.1f}s")
    print(f"features: shape {features.shape}, mean {features.mean():+.4f}, std {features.std():.4f}")
    print("first 8:", np.array2string(features[:8], precision=4))
    attention = np.asarray(out["attention"][0])
    print(f"attention over {n_tokens} tokens ({grid[0]}x{grid[1]}): sum {attention.sum():.6f}, "
          f"max {attention.max():.4f}, min {attention.min():.6f}")
    path = save_attention_overlay(
        image, attention, grid, f"{args.out}/attention_{args.image}.png",
        title=f"SimPool attention, {args.backbone} (random init)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
