"""Decoding, channel and value-range ops, labels: the non-geometric, non-colour pp ops."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

from simpool_jax.data.ops.base import image_op, to_float
from simpool_jax.data.registry import Example, Op, register

# Channel statistics by name (torchvision / DINO ImageNet values; 0.5/0.5 for the timm ViT recipe).
STATS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "half": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


@image_op("decode")
def decode(image: tf.Tensor, channels: int = 3) -> tf.Tensor:
    """Encoded bytes (JPEG, PNG, GIF, BMP) -> uint8 (H, W, channels); decoded images pass through.

    JPEGs use the accurate integer DCT, which matches PIL (and so the PyTorch reference loaders)
    to the pixel; 1-channel images come out as RGB when channels=3.
    """
    if image.dtype != tf.string:
        return to_rgb(image) if channels == 3 else image

    def jpeg() -> tf.Tensor:
        return tf.io.decode_jpeg(image, channels=channels, dct_method="INTEGER_ACCURATE")

    def other() -> tf.Tensor:
        return tf.io.decode_image(image, channels=channels, expand_animations=False)

    out = tf.cond(tf.io.is_jpeg(image), jpeg, other)
    return tf.ensure_shape(out, [None, None, channels])


@image_op("to_rgb")
def to_rgb(image: tf.Tensor) -> tf.Tensor:
    """Repeat a single channel three times (grayscale data for RGB models); RGB passes through."""
    if image.shape[-1] == 1:
        return tf.repeat(image, 3, axis=-1)
    return image


def stats(name_or_mean: str | Sequence[float], std: Sequence[float] | None = None) -> tuple:
    """(mean, std) from a name in STATS or explicit per-channel values."""
    if isinstance(name_or_mean, str):
        if name_or_mean not in STATS:
            raise ValueError(f"unknown normalisation {name_or_mean!r}; choose one of {sorted(STATS)}")
        return STATS[name_or_mean]
    if std is None:
        raise ValueError("normalize(mean, std) needs both mean and std")
    return tuple(name_or_mean), tuple(std)


@image_op("normalize")
def normalize(image: tf.Tensor, mean: str | Sequence[float] = "imagenet", std: Sequence[float] | None = None) -> tf.Tensor:
    """(image in [0, 1] - mean) / std per channel, float32; uint8 input is scaled to [0, 1] first."""
    m, s = stats(mean, std)
    # float32 even when the values are written as ints
    scale = 1.0 / tf.constant(s, tf.float32)
    shift = -tf.constant(m, tf.float32) * scale
    # As rows of W * C values: TF's CPU kernels broadcast a long row far faster than a last axis of 3.
    x = to_float(image)
    shape = tf.shape(x)
    rows = tf.reshape(x, [-1, shape[-2] * shape[-1]])
    out = rows * tf.tile(scale, shape[-2:-1]) + tf.tile(shift, shape[-2:-1])
    return tf.ensure_shape(tf.reshape(out, shape), x.shape)


@register("onehot")
def onehot(num_classes: int, smoothing: float = 0.0, key: str = "label", out_key: str = "labels") -> Op:
    """Integer label -> float32 one-hot with timm's label smoothing: off = s/K, on = 1 - s + s/K."""
    off = smoothing / num_classes
    on = 1.0 - smoothing + off

    def op(data: Example) -> Example:
        return {**data, out_key: tf.one_hot(data[key], num_classes, on_value=on, off_value=off)}

    return op


@register("keep")
def keep(*keys: str) -> Op:
    """Keep only `keys` (and the pipeline's private `_...` keys)."""

    def op(data: Example) -> Example:
        missing = [k for k in keys if k not in data]
        if missing:
            raise KeyError(f"keep{keys}: {missing} not in the example (it has {sorted(data)})")
        return {k: v for k, v in data.items() if k in keys or k.startswith("_")}

    return op
