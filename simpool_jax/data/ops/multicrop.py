"""DINO multi-crop: one decoded image -> 2 global + N local augmented crops, as fixed-shape stacks.

Per-crop policies are those of DINO's `DataAugmentationDINO`: every crop gets a bicubic
RandomResizedCrop, then flip (0.5), ColorJitter(0.4, 0.4, 0.2, 0.1) with p=0.8 and grayscale (0.2);
then global crop 1 is always blurred, global crop 2 is blurred with p=0.1 and solarised with p=0.2,
and every local crop is blurred with p=0.5; all are normalised last. The image is decoded once
(put `decode` before this op) and each crop draws from its own seed.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import tensorflow as tf

from simpool_jax.data.ops.base import split_seed, take_seed
from simpool_jax.data.ops.color import color_jitter, gaussian_blur, random_grayscale, solarize
from simpool_jax.data.ops.general import normalize, to_rgb
from simpool_jax.data.ops.geometry import flip_lr, random_resized_crop
from simpool_jax.data.registry import Example, Op, register


def dino_crop(image: tf.Tensor, seed: tf.Tensor, size: int, scale: Sequence[float], blur_p: float,
              solarize_p: float, mean: str | Sequence[float], std: Sequence[float] | None) -> tf.Tensor:
    """One DINO view: crop, flip and colour jitter, grayscale, blur, solarise, normalise."""
    s = split_seed(seed, 6)
    x = random_resized_crop(image, s[0], size, scale)
    x = flip_lr(x, s[1])
    x = color_jitter(x, s[2])
    x = random_grayscale(x, s[3])
    x = gaussian_blur(x, s[4], p=blur_p)
    x = solarize(x, s[5], p=solarize_p)
    return normalize(x, mean, std)


@register("dino_multicrop")
def dino_multicrop(global_size: int = 224, local_size: int = 96, n_local: int = 6,
                   global_scale: Sequence[float] = (0.4, 1.0), local_scale: Sequence[float] = (0.05, 0.4),
                   mean: str | Sequence[float] = "imagenet", std: Sequence[float] | None = None,
                   key: str = "image") -> Op:
    """`image` (decoded, H x W x 1 or 3) -> `global` (2, G, G, 3) and `local` (n_local, L, L, 3) float32."""
    policies = [(global_size, global_scale, 1.0, 0.0), (global_size, global_scale, 0.1, 0.2)]
    policies += [(local_size, local_scale, 0.5, 0.0)] * n_local
    # One traced function per distinct policy, called once per crop: tracing 8 inlined copies of the
    # crop graph (each with its conds and switch) takes ~5x longer, at every tf.data start-up.
    fns = {p: tf.function(functools.partial(dino_crop, size=p[0], scale=p[1], blur_p=p[2], solarize_p=p[3],
                                            mean=mean, std=std), reduce_retracing=True) for p in set(policies)}

    def op(data: Example) -> Example:
        seed, data = take_seed(data)
        image = to_rgb(data[key])
        crops = [fns[p](image, s) for s, p in zip(split_seed(seed, len(policies)), policies)]
        out = {k: v for k, v in data.items() if k != key}
        out["global"] = tf.stack(crops[:2])
        if n_local:
            out["local"] = tf.stack(crops[2:])
        return out

    return op
