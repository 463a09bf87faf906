"""The README's forward-pass demo runs and writes an attention PNG of the right size."""

import numpy as np
from PIL import Image

from simpool_jax import demo
from simpool_jax.evaluate.attention import attention_grid


def test_demo_writes_attention_png(tmp_path, capsys):
    demo.main(["--backbone", "vit_tiny", "--size", "64", "--image", "chelsea", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "features: shape (192,)" in printed and "attention over 16 tokens (4x4): sum 1.000000" in printed
    png = Image.open(tmp_path / "attention_chelsea.png")
    assert png.size == (900, 330)


def test_attention_grid_is_row_major_and_scaled():
    grid = attention_grid(np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]), (2, 3))
    np.testing.assert_allclose(grid, [[0, 0.2, 0.4], [0.6, 0.8, 1.0]])
    np.testing.assert_array_equal(attention_grid(np.full(4, 0.25), (2, 2)), np.zeros((2, 2)))


def test_attention_grid_figure_has_one_column_per_image(tmp_path):
    from simpool_jax.evaluate.attention import save_attention_grid

    rng = np.random.default_rng(0)
    path = save_attention_grid(rng.standard_normal((3, 28, 28, 3)), rng.random((3, 49)), (7, 7),
                               tmp_path / "grid.png", title="test")
    assert Image.open(path).size == (480, 340)  # 1.6 in per image x 100 dpi, 3.4 in tall
