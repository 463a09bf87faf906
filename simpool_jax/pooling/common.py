"""Helpers shared by poolers: the token grid for spatial operators, and the read-out of k vectors.

Tokens arrive as (B, N, D) in row-major (h, w) order, so a reshape gives the NHWC grid that the
spatial operators (HOW's smoothing, GE's gather, CBAM's 7x7 conv) need.

Poolers with k > 1 outputs (OTK, k-means, Slot Attention) produce U (B, k, D); the contract wants
one vector, so `readout` turns U into it:
    concat: (B, k*D), the k vectors side by side (OTK's own output);
    max:    (B, D), the elementwise max over the k vectors;
    stack:  (B, k, D), unreduced: `simpool_jax.model.Model` applies its linear head to each
            vector and takes the max over the k logits (the paper's Slot read-out), and gives the
            max over the k vectors as its features.
"""

from __future__ import annotations

import jax

READOUTS = ("concat", "max", "stack")


def as_grid(tokens: jax.Array, grid: tuple[int, int]) -> jax.Array:
    """(B, N, D) tokens in row-major order -> (B, h, w, D)."""
    b, n, d = tokens.shape
    h, w = grid
    if h * w != n:
        raise ValueError(f"grid {grid} does not hold {n} tokens")
    return tokens.reshape(b, h, w, d)


def check_iterative(method: str, iterations: int, mode: str) -> None:
    """The options every k-vector pooler shares: at least one iteration, a known read-out."""
    if iterations < 1:
        raise ValueError(f"{method} needs iterations >= 1, got {iterations}")
    if mode not in READOUTS:
        raise ValueError(f"{method} readout {mode!r} not in {READOUTS}")


def readout(vectors: jax.Array, mode: str) -> jax.Array:
    """Reduce k pooled vectors (B, k, D) to the pooler output (see the module docstring)."""
    if mode == "concat":
        return vectors.reshape(vectors.shape[0], -1)
    if mode == "max":
        return vectors.max(axis=1)
    if mode == "stack":
        return vectors
    raise ValueError(f"readout {mode!r} not in {READOUTS}")
