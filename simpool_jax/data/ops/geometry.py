"""Crops, resizes and flips, with torchvision's geometry (the reference recipes are PyTorch).

Images come in as uint8 or float in [0, 1] and leave as float32 in [0, 1]: resizing is
bicubic with antialiasing (what PIL does) and the result is clipped, as PIL's uint8 output is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import tensorflow as tf

from simpool_jax.data.ops.base import image_op, maybe, split_seed, to_float, uniform
from simpool_jax.data.ops.general import decode

RRC_TRIES = 10  # torchvision RandomResizedCrop.get_params
_OVERSHOOTING = ("bicubic", "lanczos3", "lanczos5", "mitchellcubic")  # kernels with negative lobes


def resize_to(image: tf.Tensor, height: int | tf.Tensor, width: int | tf.Tensor, method: str = "bicubic") -> tf.Tensor:
    """Antialiased resize to (height, width), float32 in [0, 1]. Only kernels with negative lobes
    can leave the input's range, so only they are clipped (as PIL's uint8 output is): the clip is
    two passes over the image, 12% of the supervised pipeline's time with bilinear."""
    size = tf.stack([height, width])
    if method == "bilinear":  # antialiasing changes only shrinking axes; TF's plain kernel is ~3x faster
        shape = tf.shape(image)
        out = tf.cond((shape[0] <= height) & (shape[1] <= width),
                      lambda: tf.image.resize(image, size, method),
                      lambda: tf.image.resize(image, size, method, antialias=True))
    else:
        out = tf.image.resize(image, size, method=method, antialias=True)
    if image.dtype == tf.uint8:
        out = out / 255.0
    return tf.clip_by_value(out, 0.0, 1.0) if method in _OVERSHOOTING else out


def rrc_box(height: tf.Tensor, width: tf.Tensor, u_area: tf.Tensor, u_ratio: tf.Tensor, u_top: tf.Tensor,
            u_left: tf.Tensor, scale: Sequence[float] | tf.Tensor = (0.08, 1.0),
            ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(top, left, h, w) of torchvision's RandomResizedCrop from uniforms in [0, 1): RRC_TRIES (10) tries of area
    ~ U(scale) * H * W (`u_area`) and log-uniform aspect ratio (`u_ratio`), the first that fits wins,
    placed by `u_top`, `u_left`; else a centre crop clamped to `ratio`.

    Vectorised over leading axes, one row per crop (u_area, u_ratio: (..., RRC_TRIES); u_top, u_left: (...)):
    DINO's multi-crop draws all its boxes with one set of ops. `scale` is a pair, or a (..., 2) tensor
    of per-crop bounds.
    """
    # Bounds as float32 tensors, differences taken in float32: bit-identical to stateless_uniform(lo, hi).
    scale = tf.convert_to_tensor(scale, tf.float32)
    lo, hi = scale[..., :1], scale[..., 1:]  # (..., 1): broadcast over the tries
    log_lo, log_hi = tf.constant(math.log(ratio[0])), tf.constant(math.log(ratio[1]))
    hf, wf = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    area = hf * wf * (u_area * (hi - lo) + lo)
    aspect = tf.exp(u_ratio * (log_hi - log_lo) + log_lo)
    w = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    h = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=-1, output_type=tf.int32)
    h, w = tf.gather(h, first, batch_dims=first.shape.rank), tf.gather(w, first, batch_dims=first.shape.rank)
    top = tf.cast(u_top * tf.cast(height - h + 1, tf.float32), tf.int32)
    left = tf.cast(u_left * tf.cast(width - w + 1, tf.float32), tf.int32)
    # Fallback: the whole image, narrowed to the nearest allowed aspect ratio, centred.
    in_ratio = wf / hf
    fw = tf.where(in_ratio > ratio[1], tf.cast(tf.round(hf * ratio[1]), tf.int32), width)
    fh = tf.where(in_ratio < ratio[0], tf.cast(tf.round(wf / ratio[0]), tf.int32), height)
    ok = tf.reduce_any(fits, axis=-1)
    h, w = tf.where(ok, h, fh), tf.where(ok, w, fw)
    top = tf.where(ok, tf.minimum(top, height - h), (height - h) // 2)
    left = tf.where(ok, tf.minimum(left, width - w), (width - w) // 2)
    return top, left, h, w


def rrc_params(height: tf.Tensor, width: tf.Tensor, seed: tf.Tensor, scale: Sequence[float] = (0.08, 1.0),
               ratio: Sequence[float] = (3 / 4, 4 / 3)) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """`rrc_box` of one crop, its uniforms drawn from `seed`."""
    s_area, s_ratio, s_top, s_left = split_seed(seed, 4)
    return rrc_box(height, width, uniform(s_area, shape=(RRC_TRIES,)), uniform(s_ratio, shape=(RRC_TRIES,)),
                   uniform(s_top), uniform(s_left), scale, ratio)


def resized_crop(image: tf.Tensor, top: tf.Tensor, left: tf.Tensor, h: tf.Tensor, w: tf.Tensor, size: int,
                 method: str = "bicubic") -> tf.Tensor:
    """The (top, left, h, w) box of `image` resized to (size, size), float32 in [0, 1]."""
    return resize_to(image[top:top + h, left:left + w], size, size, method)


@image_op("rrc", random=True)
def random_resized_crop(image: tf.Tensor, seed: tf.Tensor, size: int, scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3), method: str = "bicubic") -> tf.Tensor:
    """RandomResizedCrop(size, scale, ratio) -> float32 (size, size, C) in [0, 1]."""
    shape = tf.shape(image)
    return resized_crop(image, *rrc_params(shape[0], shape[1], seed, scale, ratio), size, method)


@image_op("decode_rrc", random=True)
def decode_random_resized_crop(image: tf.Tensor, seed: tf.Tensor, size: int,
                               scale: Sequence[float] = (0.08, 1.0),
                               ratio: Sequence[float] = (3 / 4, 4 / 3), method: str = "bicubic",
                               channels: int = 3) -> tf.Tensor:
    """`decode|rrc(...)` in one op that decodes only the crop window of a JPEG.

    The crop box is drawn from the JPEG header's size (same draws as `rrc` with the same seed),
    so at ImageNet sizes most of the image is never decoded: the supervised loader's main cost.
    Non-JPEG bytes and already-decoded images go through `decode` and `rrc` unchanged.
    """
    if image.dtype != tf.string:
        return random_resized_crop(decode(image, channels), seed, size, scale, ratio, method)

    def jpeg() -> tf.Tensor:
        shape = tf.io.extract_jpeg_shape(image)
        top, left, h, w = rrc_params(shape[0], shape[1], seed, scale, ratio)
        crop = tf.io.decode_and_crop_jpeg(image, tf.stack([top, left, h, w]), channels=channels,
                                          dct_method="INTEGER_ACCURATE")
        return resize_to(crop, size, size, method)

    def other() -> tf.Tensor:
        return random_resized_crop(decode(image, channels), seed, size, scale, ratio, method)

    out = tf.cond(tf.io.is_jpeg(image), jpeg, other)
    return tf.ensure_shape(out, [size, size, channels])


@image_op("resize")
def resize(image: tf.Tensor, size: int | Sequence[int], method: str = "bicubic") -> tf.Tensor:
    """Resize to (size, size) or (h, w), ignoring the aspect ratio."""
    h, w = (size, size) if isinstance(size, int) else size
    return resize_to(image, h, w, method)


@image_op("resize_small")
def resize_small(image: tf.Tensor, size: int, method: str = "bicubic") -> tf.Tensor:
    """torchvision Resize(int): the shorter side becomes `size`, the longer int(size * long / short)."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    short, long = tf.minimum(h, w), tf.maximum(h, w)
    new_long = tf.cast(size * long // short, tf.int32)  # int() truncation as torchvision
    nh, nw = tf.where(h <= w, size, new_long), tf.where(h <= w, new_long, size)
    return resize_to(image, nh, nw, method)


@image_op("central_crop")
def central_crop(image: tf.Tensor, size: int) -> tf.Tensor:
    """torchvision CenterCrop(size): offsets int(round((H - size) / 2)) (round half to even)."""
    shape = tf.shape(image)
    tf.debugging.assert_greater_equal(tf.minimum(shape[0], shape[1]), size,
                                      message=f"central_crop({size}): image smaller than the crop")
    top = tf.cast(tf.round(tf.cast(shape[0] - size, tf.float32) / 2), tf.int32)
    left = tf.cast(tf.round(tf.cast(shape[1] - size, tf.float32) / 2), tf.int32)
    return tf.ensure_shape(to_float(image[top:top + size, left:left + size]), [size, size, image.shape[-1]])


def mirror(image: tf.Tensor) -> tf.Tensor:
    """The image mirrored left-right."""
    return tf.reverse(image, [1])


@image_op("flip_lr", random=True)
def flip_lr(image: tf.Tensor, seed: tf.Tensor, p: float = 0.5) -> tf.Tensor:
    """Mirror left-right with probability p."""
    return maybe(seed, p, mirror, image)
