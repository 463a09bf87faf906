"""Small helpers shared by the data tests."""

from __future__ import annotations

import numpy as np
import skimage.data
import tensorflow as tf
from PIL import Image


def photo(height: int, width: int) -> np.ndarray:
    """A real RGB photo (skimage's astronaut) resized to (height, width), uint8."""
    return np.asarray(Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.BICUBIC))


def draws(fn, n: int, seed: int = 0):
    """fn(stateless seed) for n different seeds, run inside tf.data.Dataset.map, stacked as numpy."""
    ds = tf.data.Dataset.range(n).map(lambda i: fn(tf.stack([tf.constant(seed, tf.int64), i])))
    return tf.nest.map_structure(lambda x: x.numpy(), next(iter(ds.batch(n))))


def within(fraction: float, p: float, n: int, sigmas: float = 4.0) -> bool:
    """|fraction - p| within `sigmas` binomial standard deviations of n draws."""
    return abs(fraction - p) <= sigmas * np.sqrt(p * (1 - p) / n)


def eager_and_mapped(op, data: dict) -> tuple[dict, dict]:
    """Run a dict op eagerly and inside tf.data.Dataset.map on the same input."""
    eager = {k: v.numpy() for k, v in op(data).items()}
    mapped = next(iter(tf.data.Dataset.from_tensors(data).map(op)))
    return eager, {k: v.numpy() for k, v in mapped.items()}
