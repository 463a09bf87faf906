"""Mixup / CutMix on whole batches (timm's `Mixup`, mode "batch"), for `pp_batch` after batching.

One lambda per batch from Beta(alpha, alpha); the batch is mixed with itself reversed along the batch
axis, and so are its one-hot `labels` (run `onehot` first). CutMix pastes a box of relative area
~1 - lambda, clipped to the image, and lambda becomes the area actually kept, so the label weights
always equal the pixel fractions.
"""

from __future__ import annotations

import tensorflow as tf

from simpool_jax.data.ops.base import RNG_KEY, split_seed, uniform
from simpool_jax.data.registry import Example, Op, register


def _beta(seed: tf.Tensor, alpha: float) -> tf.Tensor:
    a, b = split_seed(seed, 2)
    x = tf.random.stateless_gamma([], a, alpha)
    return x / (x + tf.random.stateless_gamma([], b, alpha))


def cutmix_mask(seed: tf.Tensor, height: tf.Tensor, width: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    """(H, W, 1) float mask, 1 inside timm's `rand_bbox` box of side ratio sqrt(1 - lam)."""
    s_y, s_x = split_seed(seed, 2)
    ratio = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.cast(height, tf.float32) * ratio, tf.int32)
    cut_w = tf.cast(tf.cast(width, tf.float32) * ratio, tf.int32)
    cy = tf.random.stateless_uniform([], s_y, 0, height, tf.int32)
    cx = tf.random.stateless_uniform([], s_x, 0, width, tf.int32)
    y0, y1 = tf.clip_by_value(cy - cut_h // 2, 0, height), tf.clip_by_value(cy + cut_h // 2, 0, height)
    x0, x1 = tf.clip_by_value(cx - cut_w // 2, 0, width), tf.clip_by_value(cx + cut_w // 2, 0, width)
    rows = tf.range(height)[:, None, None]
    cols = tf.range(width)[None, :, None]
    return tf.cast((rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1), tf.float32)


@register("mixup")
def mixup(mixup_alpha: float = 0.8, cutmix_alpha: float = 1.0, prob: float = 1.0, switch_prob: float = 0.5,
          key: str = "image", label_key: str = "labels") -> Op:
    """Batch op: mixup with Beta(mixup_alpha), or with probability switch_prob cutmix with
    Beta(cutmix_alpha); applied with probability prob. An alpha of 0 turns that kind off."""
    if mixup_alpha <= 0 and cutmix_alpha <= 0:
        raise ValueError("mixup: at least one of mixup_alpha and cutmix_alpha must be > 0")

    def op(data: Example) -> Example:
        rng = data[RNG_KEY][0] if RNG_KEY in data else tf.random.uniform([2], maxval=2**62, dtype=tf.int64)
        s_apply, s_switch, s_mix, s_cut, s_box = split_seed(tf.cast(rng, tf.int64), 5)
        x, y = tf.cast(data[key], tf.float32), data[label_key]
        if cutmix_alpha <= 0:
            use_cut = tf.constant(False)
        elif mixup_alpha <= 0:
            use_cut = tf.constant(True)
        else:
            use_cut = uniform(s_switch) < switch_prob
        lam = tf.where(use_cut, _beta(s_cut, max(cutmix_alpha, 1e-3)), _beta(s_mix, max(mixup_alpha, 1e-3)))
        shape = tf.shape(x)
        box = cutmix_mask(s_box, shape[1], shape[2], lam)
        weight = tf.where(use_cut, 1.0 - box, tf.fill(tf.shape(box), lam))  # weight of the original image
        lam = tf.where(use_cut, tf.reduce_mean(weight), lam)
        applied = uniform(s_apply) < prob
        weight = tf.where(applied, weight, tf.ones_like(weight))
        lam = tf.where(applied, lam, 1.0)
        mixed = x * weight + tf.reverse(x, [0]) * (1.0 - weight)
        return {**data, key: mixed, label_key: y * lam + tf.reverse(y, [0]) * (1.0 - lam)}

    return op
