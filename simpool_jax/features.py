"""python -m simpool_jax.features: features, attention and logits of a model for a batch of images.

    python -m simpool_jax.features --checkpoint DIR_OR_PTH --images X.npy --out Y.npz [--batch-size N]

X.npy holds already-normalised float32 images, NCHW (PyTorch layout) or NHWC. Y.npz gets
`features` (B, D): the representation the official k-NN / linear evaluation uses, before l2
normalisation (DINO: the backbone output; supervised: the pre-logits); `attention` (B, N) when the
pooler has one; `logits` when the model has a head. The whole file is one batch unless
--batch-size is given: SimPool's gamma-path minimum is taken over the batch, as officially.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

from simpool_jax.checkpoint import load_model


def to_nhwc(images: np.ndarray) -> np.ndarray:
    """NCHW -> NHWC when the channel axis (1 or 3 channels) is clearly axis 1."""
    if images.ndim != 4:
        raise ValueError(f"expected a 4-D image array, got shape {images.shape}")
    if images.shape[-1] in (1, 3):
        return images
    if images.shape[1] in (1, 3):
        return images.transpose(0, 2, 3, 1)
    raise ValueError(f"cannot tell the channel axis of images with shape {images.shape}")


def compute_features(model, variables, images: np.ndarray, batch_size: int | None = None) -> dict:
    """Run `model` on NHWC `images` in batches; numpy dict of features / attention / logits."""
    forward = jax.jit(lambda v, x: {k: o for k, o in model.apply(v, x).items()
                                    if k in ("features", "attention", "logits")})
    batch_size = batch_size or len(images)
    parts = [jax.device_get(forward(variables, images[i:i + batch_size]))
             for i in range(0, len(images), batch_size)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the model, write the .npz. Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m simpool_jax.features", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="model directory or .pth / .pth.tar")
    parser.add_argument("--images", required=True, help=".npy of normalised float32 images")
    parser.add_argument("--out", required=True, help=".npz to write")
    parser.add_argument("--batch-size", type=int, help="images per forward (default: all at once)")
    args = parser.parse_args(argv)
    images = to_nhwc(np.load(args.images).astype(np.float32))
    model, variables, _ = load_model(args.checkpoint)
    result = compute_features(model, variables, images, args.batch_size)
    np.savez(args.out, **result)
    shapes = ", ".join(f"{k} {v.shape}" for k, v in result.items())
    print(f"wrote {args.out}: {shapes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
