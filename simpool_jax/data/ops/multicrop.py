"""DINO multi-crop: one decoded image -> 2 global + N local augmented crops, as fixed-shape stacks.

Per-crop policies are those of DINO's `DataAugmentationDINO`: every crop gets a bicubic
RandomResizedCrop, then flip (0.5), ColorJitter(0.4, 0.4, 0.2, 0.1) with p=0.8 and grayscale (0.2);
then global crop 1 is always blurred, global crop 2 is blurred with p=0.1 and solarised with p=0.2,
and every local crop is blurred with p=0.5; all are normalised last. The image is decoded once
(put `decode` before this op).

All random numbers of all crops come from one (crops, 36) uniform draw and are turned into crop
boxes, coin flips and factors by vectorised ops; each crop then only applies them. Drawing per crop
and per op instead ran ~180 small TF ops per crop, ~1 ms of a ~11 ms image on one core
(bench/input_pipeline.py).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import tensorflow as tf

from simpool_jax.data.ops.base import take_seed, when
from simpool_jax.data.ops.color import blur, blur_radius, jitter_in_order, jitter_ranges, luma3, solarize_pixels
from simpool_jax.data.ops.general import normalize, to_rgb
from simpool_jax.data.ops.geometry import RRC_TRIES, mirror, rrc_box, resized_crop
from simpool_jax.data.registry import Example, Op, register

FLIP_P, JITTER_P, GRAY_P = 0.5, 0.8, 0.2
JITTER = (0.4, 0.4, 0.2, 0.1)  # ColorJitter(brightness, contrast, saturation, hue)
SIGMA = (0.1, 2.0)  # GaussianBlur(radius_min, radius_max), PIL's radius is the Gaussian's sigma
# Columns of the uniform draw, per crop.
_COLUMNS = {"area": RRC_TRIES, "ratio": RRC_TRIES, "top": 1, "left": 1, "flip": 1, "jitter": 1, "order": 4,
            "factors": 4, "gray": 1, "blur": 1, "sigma": 1, "solarize": 1}


def draw_views(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor, scales: Sequence[Sequence[float]],
               blur_p: Sequence[float], solarize_p: Sequence[float]) -> dict[str, tf.Tensor]:
    """Every random choice of len(scales) crops of an image of (height, width), one row per crop:
    `box` (top, left, h, w), coin flips `flip` / `jitter` / `gray` / `blur` / `solarize`, the
    jitter's `order` (a uniform permutation) and `factors`, and the blur's `sigma`."""
    u = tf.random.stateless_uniform([len(scales), sum(_COLUMNS.values())], seed)
    c = dict(zip(_COLUMNS, tf.split(u, list(_COLUMNS.values()), axis=1)))
    lo, hi = zip(*jitter_ranges(*JITTER))
    return {
        "box": tf.stack(rrc_box(height, width, c["area"], c["ratio"], c["top"][:, 0], c["left"][:, 0],
                                tf.constant(scales, tf.float32)), axis=1),
        "flip": c["flip"][:, 0] < FLIP_P,
        "jitter": c["jitter"][:, 0] < JITTER_P,
        "order": tf.argsort(c["order"], axis=1),
        "factors": c["factors"] * (tf.constant(hi) - tf.constant(lo)) + tf.constant(lo),
        "gray": c["gray"][:, 0] < GRAY_P,
        "blur": c["blur"][:, 0] < tf.constant(blur_p, tf.float32),
        "sigma": c["sigma"][:, 0] * (SIGMA[1] - SIGMA[0]) + SIGMA[0],
        "solarize": c["solarize"][:, 0] < tf.constant(solarize_p, tf.float32),
    }


def dino_view(image: tf.Tensor, view: dict[str, tf.Tensor], size: int, blur_p: float, solarize_p: float,
              mean: str | Sequence[float], std: Sequence[float] | None) -> tf.Tensor:
    """One DINO view from its `draw_views` row: crop, flip and colour jitter, grayscale, blur,
    solarise, normalise. Ops whose probability is 0 for this crop's policy are left out of the graph."""
    x = resized_crop(image, *tf.unstack(view["box"]), size)
    x = when(view["flip"], mirror, x)
    x = when(view["jitter"], lambda y: jitter_in_order(y, view["order"], view["factors"]), x)
    x = when(view["gray"], luma3, x)
    if blur_p > 0:
        x = when(view["blur"], lambda y: blur(y, view["sigma"], blur_radius(SIGMA[1])), x)
    if solarize_p > 0:
        x = when(view["solarize"], solarize_pixels, x)
    return normalize(x, mean, std)


@register("dino_multicrop")
def dino_multicrop(global_size: int = 224, local_size: int = 96, n_local: int = 6,
                   global_scale: Sequence[float] = (0.4, 1.0), local_scale: Sequence[float] = (0.05, 0.4),
                   mean: str | Sequence[float] = "imagenet", std: Sequence[float] | None = None,
                   key: str = "image") -> Op:
    """`image` (decoded, H x W x 1 or 3) -> `global` (2, G, G, 3) and `local` (n_local, L, L, 3) float32."""
    policies = [(global_size, 1.0, 0.0), (global_size, 0.1, 0.2)] + [(local_size, 0.5, 0.0)] * n_local
    scales = [global_scale] * 2 + [local_scale] * n_local
    # One traced function per distinct policy, called once per crop: tracing 8 inlined copies of the
    # crop graph (each with its conds and switch) takes ~5x longer, at every tf.data start-up.
    fns = {p: tf.function(functools.partial(dino_view, size=p[0], blur_p=p[1], solarize_p=p[2], mean=mean, std=std),
                          reduce_retracing=True) for p in set(policies)}

    def op(data: Example) -> Example:
        seed, data = take_seed(data)
        image = to_rgb(data[key])
        shape = tf.shape(image)
        views = draw_views(seed, shape[0], shape[1], scales, [p[1] for p in policies], [p[2] for p in policies])
        rows = {k: tf.unstack(v) for k, v in views.items()}
        crops = [fns[p](image, {k: v[i] for k, v in rows.items()}) for i, p in enumerate(policies)]
        out = {k: v for k, v in data.items() if k != key}
        out["global"] = tf.stack(crops[:2])
        if n_local:
            out["local"] = tf.stack(crops[2:])
        return out

    return op
