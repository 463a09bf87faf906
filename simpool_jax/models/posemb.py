"""Resizing learned position embeddings to any token grid, PyTorch-exact.

The official DINO / DINO-SimPool code resizes the (14 x 14) position-embedding grid with
`F.interpolate(mode='bicubic', scale_factor=((h0 + 0.1) / 14, (w0 + 0.1) / 14))`. With a
`scale_factor`, PyTorch maps output pixel i to source coordinate (i + 0.5) / scale - 0.5, uses
the cubic-convolution kernel with A = -0.75 and clamps indices at the border; the output size is
floor(in * scale). `jax.image.resize` maps by the size ratio and uses A = -0.5, so it cannot
reproduce the released weights' features. The resampling is separable and linear, so we build
the exact 1-D interpolation matrices in numpy at trace time and apply them with one einsum.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_A = -0.75  # PyTorch's bicubic kernel parameter (upsample_bicubic2d)

RESAMPLE_MODES = ("none", "bicubic", "dino", "dino_quirk")


def _cubic_weights(t: float) -> tuple[float, float, float, float]:
    """Cubic-convolution weights for the 4 taps at offsets -1, 0, 1, 2 from floor(src)."""

    def near(x: float) -> float:  # |x| <= 1
        return ((_A + 2) * x - (_A + 3)) * x * x + 1

    def far(x: float) -> float:  # 1 < |x| < 2
        return ((_A * x - 5 * _A) * x + 8 * _A) * x - 4 * _A

    return far(t + 1), near(t), near(1 - t), far(2 - t)


def bicubic_matrix(in_size: int, out_size: int, scale: float | None = None) -> np.ndarray:
    """(out_size, in_size) matrix of PyTorch's 1-D bicubic resampling (align_corners=False).

    `scale` is the user-given scale_factor (out/in); None means size-based (in/out) mapping.
    Computed in float64 so the only rounding left is the float32 einsum that applies it.
    """
    src_per_dst = (1.0 / scale) if scale is not None else in_size / out_size
    m = np.zeros((out_size, in_size), np.float64)
    for dst in range(out_size):
        src = (dst + 0.5) * src_per_dst - 0.5
        base = math.floor(src)
        for offset, w in zip((-1, 0, 1, 2), _cubic_weights(src - base)):
            m[dst, min(max(base + offset, 0), in_size - 1)] += w
    return m


def resample_grid(
    posemb: jax.Array, old: tuple[int, int], new: tuple[int, int], mode: str
) -> jax.Array:
    """Resize patch position embeddings (1, old_h*old_w, D) to (1, new_h*new_w, D).

    mode: 'none' (grids must match), 'bicubic' (size-based, as F.interpolate(size=...)),
    'dino' (DINO's scale_factor (n + 0.1) / old, identity when the grid already matches and is
    square, as the official CLS ViT), 'dino_quirk' (the same map applied *always*, 224 px
    included: the released DINO-SimPool ViTs were trained this way, see SIMPOOL.md §2.1).
    """
    if mode not in RESAMPLE_MODES:
        raise ValueError(f"posemb resample mode {mode!r} not in {RESAMPLE_MODES}")
    if mode == "none" or (mode in ("bicubic", "dino") and old == new and new[0] == new[1]):
        if old != new:
            raise ValueError(
                f"input gives a {new} token grid but the position embedding is {old}; "
                "set posemb_resample='bicubic' or 'dino' to resize it"
            )
        return posemb
    if mode == "bicubic":
        mh, mw = bicubic_matrix(old[0], new[0]), bicubic_matrix(old[1], new[1])
    else:
        # DINO reshapes to sqrt(N) x sqrt(N); the grid must be square.
        if old[0] != old[1]:
            raise ValueError(f"DINO position-embedding resampling needs a square grid, got {old}")
        sh, sw = (new[0] + 0.1) / old[0], (new[1] + 0.1) / old[1]
        mh, mw = bicubic_matrix(old[0], new[0], sh), bicubic_matrix(old[1], new[1], sw)
        assert math.floor(old[0] * sh) == new[0] and math.floor(old[1] * sw) == new[1]
    grid = posemb.reshape(old[0], old[1], posemb.shape[-1])
    out = jnp.einsum(
        "ih,jw,hwd->ijd",
        jnp.asarray(mh, posemb.dtype),
        jnp.asarray(mw, posemb.dtype),
        grid,
        precision=jax.lax.Precision.HIGHEST,
    )
    return out.reshape(1, new[0] * new[1], posemb.shape[-1])
