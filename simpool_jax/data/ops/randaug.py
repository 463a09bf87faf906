"""RandAugment as timm configures it for the supervised recipe ("rand-m9-mstd0.5-inc1").

`num_layers` ops drawn uniformly with replacement from timm's "increasing" list, each applied with
probability `prob`, at magnitude ~ N(magnitude, magnitude_std) clipped to [0, 10]. The ops follow
timm's PIL implementations (ImageOps / ImageEnhance / affine transforms with a grey fill) on
float32 images in [0, 1], quantised to 8 bits where PIL's result depends on it (posterize,
equalize, solarize thresholds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from simpool_jax.data.ops.base import image_op, maybe, split_seed, to_float, uniform
from simpool_jax.data.ops.color import adjust_brightness, adjust_contrast, adjust_saturation

_MAX = 10.0


def _u8(x: tf.Tensor) -> tf.Tensor:
    return tf.round(tf.clip_by_value(x, 0.0, 1.0) * 255.0)


def _signed(seed: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    return tf.where(uniform(seed) < 0.5, -value, value)


def affine(image: tf.Tensor, matrix: Sequence[tf.Tensor], fill: float) -> tf.Tensor:
    """PIL `Image.transform(AFFINE, (a, b, c, d, e, f))` (output -> input map, pixel centres at
    +0.5), bilinear, constant fill, via ImageProjectiveTransformV3 (integer pixel centres)."""
    a, b, c, d, e, f = (tf.cast(v, tf.float32) for v in matrix)
    c = c + 0.5 * a + 0.5 * b - 0.5
    f = f + 0.5 * d + 0.5 * e - 0.5
    transform = tf.stack([a, b, c, d, e, f, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2],
        fill_value=tf.constant(fill, tf.float32), interpolation="BILINEAR", fill_mode="CONSTANT")
    return out[0]


def rotate(image: tf.Tensor, degrees: tf.Tensor, fill: float) -> tf.Tensor:
    """PIL Image.rotate(degrees) about the centre (counter-clockwise)."""
    h, w = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    t = -degrees * math.pi / 180
    a, b, d, e = tf.cos(t), tf.sin(t), -tf.sin(t), tf.cos(t)
    cx, cy = w / 2, h / 2
    return affine(image, (a, b, a * -cx + b * -cy + cx, d, e, d * -cx + e * -cy + cy), fill)


def posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
    """Keep the top `bits` bits of each 8-bit value."""
    step = tf.pow(2.0, 8.0 - tf.cast(bits, tf.float32))
    return tf.floor(_u8(image) / step) * step / 255.0


def solarize_threshold(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
    """Invert 8-bit values >= threshold."""
    x = _u8(image)
    return tf.where(x >= threshold, 255.0 - x, x) / 255.0


def solarize_add(image: tf.Tensor, add: tf.Tensor, threshold: float = 128) -> tf.Tensor:
    """Add `add` to 8-bit values < threshold (clipped to 255)."""
    x = _u8(image)
    return tf.where(x < threshold, tf.minimum(x + add, 255.0), x) / 255.0


def autocontrast(image: tf.Tensor) -> tf.Tensor:
    """PIL ImageOps.autocontrast: stretch each channel's [min, max] to [0, 255] (LUT truncation)."""
    x = _u8(image)
    lo, hi = tf.reduce_min(x, axis=[0, 1]), tf.reduce_max(x, axis=[0, 1])
    # (x - lo) * 255 / (hi - lo) is k / (hi - lo) away from an integer or on it: the 1e-3 only
    # absorbs float32 error before truncating as PIL's int() does.
    out = tf.clip_by_value(tf.floor((x - lo) * 255.0 / tf.maximum(hi - lo, 1.0) + 1e-3), 0.0, 255.0)
    return tf.where(hi > lo, out, x) / 255.0


def equalize(image: tf.Tensor) -> tf.Tensor:
    """PIL ImageOps.equalize per channel: LUT (cumulative count + step // 2) // step."""
    x = tf.cast(_u8(image), tf.int32)
    channels = []
    for c in range(image.shape[-1]):
        v = x[..., c]
        hist = tf.math.bincount(tf.reshape(v, [-1]), minlength=256, maxlength=256)
        last = tf.gather(hist, tf.reduce_max(tf.where(hist > 0)))
        step = (tf.reduce_sum(hist) - last) // 255
        lut = tf.minimum((tf.concat([[0], tf.cumsum(hist)[:-1]], 0) + step // 2) // tf.maximum(step, 1), 255)
        channels.append(tf.where(step > 0, tf.gather(lut, v), v))
    return tf.cast(tf.stack(channels, -1), tf.float32) / 255.0


def sharpness(image: tf.Tensor, factor: tf.Tensor) -> tf.Tensor:
    """PIL ImageEnhance.Sharpness: blend with the SMOOTH-filtered image (border pixels unfiltered)."""
    k = tf.constant([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]]) / 13.0
    c = image.shape[-1]
    smooth = tf.nn.depthwise_conv2d(image[None], tf.tile(k[:, :, None, None], [1, 1, c, 1]), [1, 1, 1, 1], "VALID")[0]
    smooth = tf.round(smooth * 255.0) / 255.0
    degenerate = tf.pad(smooth - image[1:-1, 1:-1], [[1, 1], [1, 1], [0, 0]]) + image
    return tf.clip_by_value(degenerate + factor * (image - degenerate), 0.0, 1.0)


def _ops(fill: float) -> list:
    """timm's _RAND_INCREASING_TRANSFORMS as (image, magnitude in [0, 1], sign seed) -> image."""
    def factor(m, s):
        return 1.0 + _signed(s, m * 0.9)

    h = lambda x: tf.cast(tf.shape(x)[0], tf.float32)  # noqa: E731
    w = lambda x: tf.cast(tf.shape(x)[1], tf.float32)  # noqa: E731
    return [
        lambda x, m, s: autocontrast(x),
        lambda x, m, s: equalize(x),
        lambda x, m, s: 1.0 - x,
        lambda x, m, s: rotate(x, _signed(s, m * 30.0), fill),
        lambda x, m, s: posterize(x, 4.0 - tf.floor(m * 4.0)),
        lambda x, m, s: solarize_threshold(x, 256.0 - tf.floor(m * 256.0)),
        lambda x, m, s: solarize_add(x, tf.floor(m * 110.0)),
        lambda x, m, s: adjust_saturation(x, factor(m, s)),
        lambda x, m, s: adjust_contrast(x, factor(m, s)),
        lambda x, m, s: adjust_brightness(x, factor(m, s)),
        lambda x, m, s: sharpness(x, factor(m, s)),
        lambda x, m, s: affine(x, (1.0, _signed(s, m * 0.3), 0.0, 0.0, 1.0, 0.0), fill),
        lambda x, m, s: affine(x, (1.0, 0.0, 0.0, _signed(s, m * 0.3), 1.0, 0.0), fill),
        lambda x, m, s: affine(x, (1.0, 0.0, _signed(s, m * 0.45) * w(x), 0.0, 1.0, 0.0), fill),
        lambda x, m, s: affine(x, (1.0, 0.0, 0.0, 0.0, 1.0, _signed(s, m * 0.45) * h(x)), fill),
    ]


OP_NAMES = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
            "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
            "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


def apply_op(image: tf.Tensor, index: int | tf.Tensor, magnitude: tf.Tensor, seed: tf.Tensor,
             fill: float = 128 / 255) -> tf.Tensor:
    """Op number `index` of OP_NAMES at `magnitude` in [0, 10] (its sign drawn from `seed`)."""
    ops = _ops(fill)
    m = tf.cast(magnitude, tf.float32) / _MAX
    return tf.switch_case(index, [lambda op=op: op(image, m, seed) for op in ops])


@image_op("randaug", random=True)
def randaug(image: tf.Tensor, seed: tf.Tensor, num_layers: int = 2, magnitude: float = 9,
            magnitude_std: float = 0.5, prob: float = 0.5, fill: float = 128 / 255) -> tf.Tensor:
    """RandAugment(num_layers, magnitude, mstd, op prob): float32 [0, 1] output."""
    def layer(k, x):
        s = split_seed(tf.random.experimental.stateless_fold_in(seed, k), 4)
        index = tf.random.stateless_uniform([], s[0], 0, len(OP_NAMES), tf.int32)
        mag = tf.clip_by_value(magnitude + magnitude_std * tf.random.stateless_normal([], s[1]), 0.0, _MAX)
        return k + 1, maybe(s[2], prob, lambda y: apply_op(y, index, mag, s[3], fill), x)

    return tf.while_loop(lambda k, _: k < num_layers, layer, (tf.constant(0), to_float(image)))[1]
