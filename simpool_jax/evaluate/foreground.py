"""How well an attention map covers the object: foreground IoU of the thresholded map.

The map of each image is thresholded as in DINO's attention figures (`mass_threshold`: keep the
most-attended tokens holding `mass` of the total), nearest-upsampled to the pixels and compared
with a foreground mask by intersection over union. On Fashion-MNIST the object is exactly the
non-black pixels of the raw 28 x 28 image, so `fashion_mnist_iou` gives one number per model that
compares SimPool's attention with the CLS attention of a CLS ViT or a GAP model's stand-in map.

Sources of the map (`attention_maps`):
  'pooler'     the pooler's own attention (SimPool's a; CaiT / CBAM / HOW maps likewise);
  'cls'        the mean over heads of the last ViT block's CLS -> patch attention (the paper's
               baseline map for CLS models);
  'token_norm' the l2 norm of each token the pooler saw: a stand-in for poolers that have no
               attention (GAP, max, GeM, ...), not an attention the model computes.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from simpool_jax.evaluate.attention import upsample_nearest
from simpool_jax.evaluate.datasets import FASHION_MNIST_PP
from simpool_jax.models.base import BackboneOutput

SOURCES = ("auto", "pooler", "cls", "token_norm")
FOREGROUND_KEY = "foreground"
FASHION_MNIST_SIZE = (28, 28)  # the raw images, and so the foreground masks


def mass_threshold(attention: np.ndarray, mass: float = 0.6) -> np.ndarray:
    """(n, N) non-negative maps -> bool (n, N): per row, the highest tokens whose cumulative share
    of the row's total first reaches `mass` (DINO's `cumval > 1 - threshold` on the ascending sort).

    A token is kept when the share held by the tokens ranked above it is still below `mass`. Rows
    are normalised here, so any scale works; equal values rank by token index (lower first), so
    ties are deterministic; an all-zero row keeps nothing.
    """
    a = np.asarray(attention, np.float64)
    if a.ndim != 2:
        raise ValueError(f"attention must be (n, N), got shape {a.shape}")
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError("attention maps must be finite and non-negative")
    order = np.argsort(-a, axis=1, kind="stable")
    ranked = np.take_along_axis(a, order, axis=1)
    total = ranked.sum(axis=1, keepdims=True)
    share = ranked / np.where(total > 0, total, 1.0)
    before = np.cumsum(share, axis=1) - share  # share of the tokens ranked above
    keep_ranked = (before < mass) & (total > 0)
    keep = np.zeros_like(keep_ranked)
    np.put_along_axis(keep, order, keep_ranked, axis=1)
    return keep


def foreground_iou(attention: np.ndarray, grid: tuple[int, int], masks: np.ndarray,
                   mass: float = 0.6) -> np.ndarray:
    """(n,) IoU of each thresholded token map (nearest-upsampled to the mask size, see
    `upsample_nearest`) with its bool mask (n, H, W). Both empty (nothing kept, no foreground)
    counts as full agreement, IoU 1."""
    masks = np.asarray(masks, bool)
    kept = mass_threshold(attention, mass)
    if masks.ndim != 3 or len(masks) != len(kept):
        raise ValueError(f"masks must be (n, H, W) with n = {len(kept)}, got shape {masks.shape}")
    if grid[0] * grid[1] != kept.shape[1]:
        raise ValueError(f"grid {grid} does not hold the {kept.shape[1]} tokens of the maps")
    pixels = upsample_nearest(kept.reshape(len(kept), *grid), masks.shape[1:])
    inter = (pixels & masks).sum(axis=(1, 2))
    union = (pixels | masks).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def _probe(model: Any, variables: dict, images: Any) -> tuple[tuple[int, int], bool, bool]:
    """(token grid, pooler has attention, backbone has a class token), read off the backbone's
    output while tracing the model (nothing is computed)."""
    found = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(out, BackboneOutput):
            found.update(grid=tuple(int(g) for g in out.grid), cls=out.cls is not None)
        return out

    shape = jax.ShapeDtypeStruct(np.shape(images), jnp.float32)
    with nn.intercept_methods(record):
        out = jax.eval_shape(lambda v, x: model.apply(v, x, with_head=False), variables, shape)
    return found["grid"], "attention" in out, found["cls"]


def resolve_source(model: Any, variables: dict, images: Any, source: str = "auto"
                   ) -> tuple[str, tuple[int, int]]:
    """(source used, token grid) for `images` of this shape; an unavailable source is an error."""
    if source not in SOURCES:
        raise ValueError(f"source {source!r} not in {SOURCES}")
    grid, has_attention, has_cls = _probe(model, variables, images)
    if source == "auto":
        source = "pooler" if has_attention else "cls" if has_cls else "token_norm"
    if source == "pooler" and not has_attention:
        raise ValueError(f"pooler {model.pooling!r} returns no attention; use source 'cls' (ViTs "
                         "with a class token) or 'token_norm'")
    if source == "cls" and not has_cls:
        raise ValueError(f"source 'cls' needs a ViT with a class token; {model.backbone} + "
                         f"{model.pooling} has none")
    return source, grid


def map_function(model: Any, variables: dict, source: str):
    """Jitted images -> (B, N) float32 maps of `source` ('pooler', 'cls' or 'token_norm')."""

    def maps(images: jax.Array) -> jax.Array:
        if source == "cls":
            _, state = model.apply(variables, images, with_head=False, mutable=["intermediates"])
            blocks = state["intermediates"]["backbone"]
            last = max((k for k in blocks if k.startswith("blocks_")), key=lambda k: int(k[7:]))
            attention = blocks[last]["attn"]["attention"][0]  # (B, heads, 1 + N, 1 + N)
            return attention[:, :, 0, 1:].astype(jnp.float32).mean(axis=1)
        out = model.apply(variables, images, with_head=False)
        if source == "pooler":
            return out["attention"].astype(jnp.float32)
        return jnp.linalg.norm(out["tokens"].astype(jnp.float32), axis=-1)

    return jax.jit(maps)


def attention_maps(model: Any, variables: dict, images: Any, source: str = "auto"
                   ) -> tuple[np.ndarray, tuple[int, int], str]:
    """((n, N) maps, token grid (h, w), source used) for NHWC `images` (module docstring).

    'auto' = 'pooler' if the pooler returns attention, else 'cls' if the ViT has a class token,
    else 'token_norm'. The grid is the backbone's own, not a square root of N. With several
    processes every one of them calls it and gets all the maps.
    """
    source, grid = resolve_source(model, variables, images, source)
    maps = multihost_utils.process_allgather(map_function(model, variables, source)(images),
                                             tiled=True)
    return np.asarray(maps), grid, source


def with_foreground(pp: str, size: tuple[int, int]) -> list:
    """`pp` with an op after its `decode` that stores the raw image's non-black pixels (any
    channel > 0, before resizing or normalisation) as bool `size` under FOREGROUND_KEY."""
    import tensorflow as tf

    from simpool_jax.data.registry import split_spec

    pieces = split_spec(pp)
    names = [p.split("(")[0].strip() if isinstance(p, str) else None for p in pieces]
    if "decode" not in names:
        raise ValueError(f"pp {pp!r} has no decode op to read the raw image after")
    cut = names.index("decode") + 1

    def foreground(data: dict) -> dict:
        mask = tf.reduce_any(data["image"] > 0, axis=-1)
        return {**data, FOREGROUND_KEY: tf.ensure_shape(mask, size)}

    return pieces[:cut] + [foreground] + pieces[cut:]


def fashion_mnist_iou(model: Any, variables: dict, *, split: str = "test", limit: int | None = None,
                      batch_size: int = 256, pp: str = FASHION_MNIST_PP, mass: float = 0.6,
                      source: str = "auto", data_dir: str | None = None, mesh: Any = None) -> dict:
    """Mean foreground IoU over a Fashion-MNIST split: {'mean_iou', 'n', 'source', 'mass'}.

    The mask is the raw uint8 image's pixels > 0; the model sees the image through `pp` (the k-NN
    evaluation's by default). Batches are sharded over `mesh` (default: all devices on 'data');
    the padding examples of the last batch are masked out, so each image counts once. With several
    processes every one of them calls it, reads its own shard of the split and gets the mean over
    all of them.
    """
    from simpool_jax.data import make_eval_iterator
    from simpool_jax.parallel import make_mesh

    mesh = mesh if mesh is not None else make_mesh((("data", -1),))
    config = dict(name="fashion_mnist", split=split, batch_size=batch_size,
                  pp=with_foreground(pp, FASHION_MNIST_SIZE), data_dir=data_dir, limit=limit)
    ious, maps, grid = [], None, None
    for batch in make_eval_iterator(config, mesh):
        if maps is None:
            source, grid = resolve_source(model, variables, batch["image"], source)
            maps = map_function(model, variables, source)
        attention, real, masks = multihost_utils.process_allgather(
            (maps(batch["image"]), batch["mask"], batch[FOREGROUND_KEY]), tiled=True)
        real = np.asarray(real, bool)
        ious.append(foreground_iou(np.asarray(attention)[real], grid,
                                   np.asarray(masks, bool)[real], mass))
    ious = np.concatenate(ious)
    return {"mean_iou": float(ious.mean()), "n": int(len(ious)), "source": source, "mass": mass}
