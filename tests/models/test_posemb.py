"""Position-embedding resampling against PyTorch's own F.interpolate (bicubic)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from simpool_jax.models.posemb import bicubic_matrix, resample_grid


def _torch_resize(grid: np.ndarray, **kwargs) -> np.ndarray:
    t = torch.from_numpy(grid).permute(2, 0, 1)[None]
    return F.interpolate(t, mode="bicubic", align_corners=False, **kwargs)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("new", [(14, 14), (6, 6), (56, 56), (4, 9), (20, 11)])
def test_dino_scale_factor_resampling_matches_torch(new):
    rng = np.random.default_rng(0)
    grid = rng.standard_normal((14, 14, 5)).astype(np.float32)
    expected = _torch_resize(grid, scale_factor=((new[0] + 0.1) / 14, (new[1] + 0.1) / 14))
    ours = np.asarray(resample_grid(grid.reshape(1, 196, 5), (14, 14), new, "dino_quirk"))
    np.testing.assert_allclose(ours.reshape(*new, 5), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("new", [(7, 7), (6, 6), (32, 32), (10, 3)])
def test_size_based_bicubic_matches_torch(new):
    rng = np.random.default_rng(1)
    grid = rng.standard_normal((14, 14, 3)).astype(np.float32)
    expected = _torch_resize(grid, size=new)
    ours = np.asarray(resample_grid(grid.reshape(1, 196, 3), (14, 14), new, "bicubic"))
    np.testing.assert_allclose(ours.reshape(*new, 3), expected, atol=1e-5, rtol=0)


def test_quirk_is_not_identity_at_224_but_dino_mode_is():
    """The official SimPool ViT resamples 14 -> 14 with scale 14.1/14 (SIMPOOL.md §2.1)."""
    m = bicubic_matrix(14, 14, 14.1 / 14)
    assert abs(m[0, 0] - 1.0026) < 1e-4 and abs(m[-1, -1] - 0.9218) < 1e-4
    assert np.abs(m - np.eye(14)).max() > 0.08
    grid = np.random.default_rng(2).standard_normal((1, 196, 4)).astype(np.float32)
    np.testing.assert_array_equal(resample_grid(grid, (14, 14), (14, 14), "dino"), grid)
    assert np.abs(np.asarray(resample_grid(grid, (14, 14), (14, 14), "dino_quirk")) - grid).max() > 1e-2


def test_mismatched_grid_without_resampling_is_a_clear_error():
    with pytest.raises(ValueError, match="posemb_resample"):
        resample_grid(np.zeros((1, 196, 4), np.float32), (14, 14), (6, 6), "none")
    with pytest.raises(ValueError, match="not in"):
        resample_grid(np.zeros((1, 196, 4), np.float32), (14, 14), (6, 6), "nearest")
