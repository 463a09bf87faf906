"""Attention maps of a pooler, drawn over the image they came from."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def attention_grid(attention: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N,) attention over tokens -> (h, w) map in row-major token order, scaled to [0, 1]."""
    a = np.asarray(attention, np.float64).reshape(grid)
    span = a.max() - a.min()
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


def upsample_nearest(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(..., h, w) token maps -> (..., H, W): pixel (i, j) takes token (i * h // H, j * w // W).

    The nearest rule of torch's F.interpolate(mode='nearest') and DINO's attention figures: each
    token becomes an exact (H/h) x (W/w) block when H, W are multiples of the grid; otherwise the
    blocks differ by one pixel and every pixel still takes the token whose cell its top-left corner
    falls in.
    """
    maps = np.asarray(maps)
    h, w = maps.shape[-2:]
    rows = np.arange(size[0]) * h // size[0]
    cols = np.arange(size[1]) * w // size[1]
    return maps[..., rows[:, None], cols[None, :]]


def attention_overlay(image: np.ndarray, attention: np.ndarray, grid: tuple[int, int],
                      alpha: float = 0.6) -> np.ndarray:
    """(H, W, 3) uint8: `image` blended with the viridis-coloured attention, nearest-upsampled
    to the image's own pixels (no figure margins: the result has the image's size).

    image: (H, W, 3) or (H, W) uint8, the pixels the model saw; attention (N,) over `grid`.
    """
    from matplotlib import colormaps

    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    heat = upsample_nearest(attention_grid(attention, grid), image.shape[:2])
    colour = colormaps["viridis"](heat)[..., :3] * 255.0
    return np.round((1 - alpha) * image + alpha * colour).astype(np.uint8)


def save_overlay_png(image: np.ndarray, attention: np.ndarray, grid: tuple[int, int],
                     path: str | Path, alpha: float = 0.6) -> Path:
    """Write `attention_overlay(...)` as a PNG of exactly the image's pixel size."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(attention_overlay(image, attention, grid, alpha)).save(path)
    return path


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path: str | Path, title: str, fontsize: int | None = None) -> Path:
    """Title, tight layout, write the PNG (creating its folder), close the figure."""
    if title:
        fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def save_attention_overlay(
    image: np.ndarray, attention: np.ndarray, grid: tuple[int, int], path: str | Path,
    title: str = "",
) -> Path:
    """Write a PNG: the image, its attention map (nearest-upsampled) and the overlay, side by side.

    image: (H, W, 3) uint8 or [0, 1] floats, the pixels the model saw.
    """
    plt = _pyplot()
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
    return _finish(fig, path, title)


def save_attention_grid(images: np.ndarray, attentions: np.ndarray, grid: tuple[int, int],
                        path: str | Path, title: str = "") -> Path:
    """Write a PNG with one column per image: the image (rescaled for display) above its
    attention overlay. images (n, H, W, 3) in any range; attentions (n, N) over the token grid."""
    plt = _pyplot()
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for i, (image, attention) in enumerate(zip(images, attentions)):
        image = np.asarray(image, np.float64)
        image = (image - image.min()) / max(image.max() - image.min(), 1e-12)
        h, w = image.shape[:2]
        axes[0, i].imshow(image)
        axes[1, i].imshow(image)
        axes[1, i].imshow(attention_grid(attention, grid), cmap="viridis", alpha=0.6,
                          extent=(0, w, h, 0), interpolation="bilinear")
        for ax in axes[:, i]:
            ax.axis("off")
    return _finish(fig, path, title, fontsize=9)
