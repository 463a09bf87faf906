"""Attention maps of a pooler, drawn over the image they came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def attention_grid(attention: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N,) attention over tokens -> (h, w) map in row-major token order, scaled to [0, 1]."""
    a = np.asarray(attention, np.float64).reshape(grid)
    span = a.max() - a.min()
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


def save_attention_overlay(
    image: np.ndarray, attention: np.ndarray, grid: tuple[int, int], path: str | Path,
    title: str = "",
) -> Path:
    """Write a PNG: the image, its attention map (nearest-upsampled) and the overlay, side by side.

    image: (H, W, 3) uint8 or [0, 1] floats, the pixels the model saw.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    heat = attention_grid(attention, grid)
    h, w = image.shape[:2]
    extent = (0, w, h, 0)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    axes[0].imshow(image)
    axes[0].set_title("image")
    axes[1].imshow(heat, cmap="viridis", extent=extent, interpolation="nearest")
    axes[1].set_title(f"attention {grid[0]}x{grid[1]}")
    axes[2].imshow(image)
    axes[2].imshow(heat, cmap="viridis", alpha=0.6, extent=extent, interpolation="bilinear")
    axes[2].set_title("overlay")
    for ax in axes:
        ax.axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
