"""Shared plumbing of the pp ops: per-op random seeds and the image-op registration decorator.

Randomness is stateless: the pipeline gives every example an `_rng` seed (derived from the run's
seed, the process and the example's position in the stream), and each random op splits a fresh
seed off it. So a run is reproducible from its seed whatever the tf.data parallelism, and two
random ops never share draws. An example without `_rng` (eager use) gets a stateful random seed.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import tensorflow as tf

from simpool_jax.data.registry import Example, Op, register

RNG_KEY = "_rng"


def take_seed(data: Example) -> tuple[tf.Tensor, Example]:
    """A fresh stateless seed (int64 [2]) for one op, and `data` with its `_rng` advanced."""
    if RNG_KEY not in data:
        return tf.random.uniform([2], maxval=2**62, dtype=tf.int64), data
    seeds = tf.random.experimental.stateless_split(tf.cast(data[RNG_KEY], tf.int64), 2)
    return seeds[0], {**data, RNG_KEY: seeds[1]}


def split_seed(seed: tf.Tensor, n: int) -> list[tf.Tensor]:
    """`n` independent seeds from one."""
    return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def uniform(seed: tf.Tensor, lo: float = 0.0, hi: float = 1.0, shape: tuple = ()) -> tf.Tensor:
    """Stateless float32 U[lo, hi)."""
    return tf.random.stateless_uniform(shape, seed, minval=lo, maxval=hi)


def when(flag: tf.Tensor, fn: Callable[[tf.Tensor], tf.Tensor], image: tf.Tensor) -> tf.Tensor:
    """`fn(image)` where the boolean `flag` is true, else `image`."""
    return tf.cond(flag, lambda: fn(image), lambda: image)


def maybe(seed: tf.Tensor, p: float, fn: Callable[[tf.Tensor], tf.Tensor], image: tf.Tensor) -> tf.Tensor:
    """`fn(image)` with probability `p`, else `image` (no branch at all when p is 0 or 1)."""
    if p >= 1:
        return fn(image)
    if p <= 0:
        return image
    return when(uniform(seed) < p, fn, image)


def to_float(image: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [0, 1]; float images pass through as float32."""
    if image.dtype == tf.uint8:
        return tf.cast(image, tf.float32) / 255.0
    return tf.cast(image, tf.float32)


def image_op(name: str, random: bool = False) -> Callable[[Callable], Callable]:
    """Register `fn(image, [seed,] *args, **kw)` as the pp op `name(*args, key='image', **kw)`.

    The arguments are bound when the op is built, so a wrong one fails at `get_pp` time with the
    op's name rather than while tf.data traces the map function.
    """

    def deco(fn: Callable) -> Callable:
        @register(name)
        @functools.wraps(fn)
        def factory(*args, key: str = "image", **kwargs) -> Op:
            lead = (None, None) if random else (None,)
            inspect.signature(fn).bind(*lead, *args, **kwargs)

            def op(data: Example) -> Example:
                if random:
                    seed, data = take_seed(data)
                    return {**data, key: fn(data[key], seed, *args, **kwargs)}
                return {**data, key: fn(data[key], *args, **kwargs)}

            return op

        return fn

    return deco
