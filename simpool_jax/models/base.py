"""The backbone contract: images in, a token grid out, no pooling inside."""

from __future__ import annotations

from typing import NamedTuple

import jax


class BackboneOutput(NamedTuple):
    """What every backbone returns.

    tokens: (B, N, D) spatial tokens in row-major (h, w) order, before any final norm;
    grid: (h, w) with h * w == N;
    cls: (B, D) class token for ViTs built with one, else None.
    """

    tokens: jax.Array
    grid: tuple[int, int]
    cls: jax.Array | None = None
