"""DINO multi-crop: fixed shapes and dtypes, per-crop independence, reproducibility from `_rng`, the
per-crop draws' statistics, and each view applying its draws as torchvision does."""

import numpy as np
import pytest
import tensorflow as tf

from helpers import draws, eager_and_mapped, photo, within
from simpool_jax.data import get_pp
from simpool_jax.data.ops.geometry import resized_crop
from simpool_jax.data.ops.multicrop import dino_view, draw_views

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.mark.parametrize("image, g, l, n", [(photo(120, 90), 64, 32, 6), (photo(28, 28)[..., :1], 28, 12, 4)])
def test_multicrop_shapes_dtypes_and_ranges(image, g, l, n):
    pp = get_pp(f"decode|dino_multicrop({g}, {l}, {n}, global_scale=(0.25, 1), local_scale=(0.05, 0.25))")
    ds = tf.data.Dataset.from_tensors({"image": tf.constant(image), "label": tf.constant(1, tf.int64)}).repeat(3)
    ds = ds.enumerate().map(lambda i, d: {**d, "_rng": tf.stack([i, i])}).map(pp)
    assert ds.element_spec["global"].shape == (2, g, g, 3) and ds.element_spec["global"].dtype == tf.float32
    assert ds.element_spec["local"].shape == (n, l, l, 3) and ds.element_spec["local"].dtype == tf.float32
    assert "image" not in ds.element_spec and "label" in ds.element_spec
    outs = list(ds.as_numpy_iterator())
    for o in outs:
        for crops in (o["global"], o["local"]):
            pixels = crops * STD + MEAN  # back to [0, 1]
            assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
            flat = crops.reshape(len(crops), -1)
            assert len({c.tobytes() for c in flat}) == len(crops)  # every crop is its own draw
    assert not np.array_equal(outs[0]["global"], outs[1]["global"])  # different seeds, different views


def test_multicrop_reproducible_and_eager_equals_mapped():
    pp = get_pp("dino_multicrop(32, 16, 2)")
    data = {"image": tf.constant(photo(50, 60)), "_rng": tf.constant([7, 8], tf.int64)}
    eager, mapped = eager_and_mapped(pp, data)
    np.testing.assert_allclose(eager["global"], mapped["global"], atol=1e-6)
    np.testing.assert_allclose(eager["local"], mapped["local"], atol=1e-6)
    again = pp(data)
    np.testing.assert_array_equal(eager["local"], again["local"].numpy())


def test_solarisation_policy_per_crop():
    """On a white image every op but solarisation keeps pixels >= 0.6 (brightness >= 0.6; contrast,
    saturation, hue, grayscale, blur and resizing leave a constant image constant), and solarising
    sends them below 0.4. DINO solarises global crop 2 with p=0.2, never crop 1 nor the local crops."""
    white = np.full((40, 40, 3), 255, np.uint8)
    pp = get_pp("dino_multicrop(16, 8, 2, mean='half')")
    n = 400
    ds = tf.data.Dataset.range(n).map(lambda i: pp({"image": tf.constant(white), "_rng": tf.stack([i, 0])}))
    out = list(ds.as_numpy_iterator())
    g = np.stack([o["global"] for o in out]) * 0.5 + 0.5
    loc = np.stack([o["local"] for o in out]) * 0.5 + 0.5
    assert np.allclose(g, g[:, :, :1, :1], atol=1e-5)  # still constant images
    solarised = g.mean(axis=(2, 3, 4)) < 0.5
    assert not solarised[:, 0].any() and (loc.mean(axis=(2, 3, 4)) > 0.5).all()
    assert within(solarised[:, 1].mean(), 0.2, n)


def test_draw_views_policies_and_ranges():
    """Every crop's coin flips at its policy's rate, the jitter order a uniform permutation, factors
    and sigma in range, boxes inside the image with torchvision's RandomResizedCrop statistics."""
    import torch
    from scipy import stats

    from simpool_jax.convert.torch_env import ensure_torchvision_importable

    n, h, w = 2000, 300, 200
    scales = [(0.25, 1.0)] * 2 + [(0.05, 0.25)] * 3
    blur_p, solarize_p = [1.0, 0.1, 0.5, 0.5, 0.5], [0.0, 0.2, 0.0, 0.0, 0.0]
    views = draws(lambda s: draw_views(s, h, w, scales, blur_p, solarize_p), n)
    for key, p in [("flip", [0.5] * 5), ("jitter", [0.8] * 5), ("gray", [0.2] * 5), ("blur", blur_p),
                   ("solarize", solarize_p)]:
        for i, pi in enumerate(p):
            assert within(views[key][:, i].mean(), pi, n), (key, i, views[key][:, i].mean())
    perms = views["order"].reshape(-1, 4)
    codes = perms @ np.array([64, 16, 4, 1])
    assert all(sorted(p) == [0, 1, 2, 3] for p in perms[:50])
    counts = np.unique(codes, return_counts=True)[1]
    assert len(counts) == 24 and stats.chisquare(counts).pvalue > 1e-3
    factors = views["factors"].reshape(-1, 4)
    for col, (lo, hi) in enumerate([(0.6, 1.4), (0.6, 1.4), (0.8, 1.2), (-0.1, 0.1)]):
        assert factors[:, col].min() >= lo and factors[:, col].max() < hi
        assert stats.kstest((factors[:, col] - lo) / (hi - lo), "uniform").pvalue > 1e-3
    sigma = views["sigma"].ravel()
    assert sigma.min() >= 0.1 and sigma.max() < 2.0
    top, left, ch, cw = np.moveaxis(views["box"], -1, 0)
    assert (top >= 0).all() and (left >= 0).all() and (top + ch <= h).all() and (left + cw <= w).all()
    ensure_torchvision_importable()
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(0)
    for i in (0, 2):  # a global and a local crop against torchvision's draws at their scales
        ref = np.array([RandomResizedCrop.get_params(torch.zeros(1, h, w), list(scales[i]), [3 / 4, 4 / 3])
                        for _ in range(n)])
        area = ch[:, i] * cw[:, i] / (h * w)
        slack = (ch[:, i] + cw[:, i] + 1) / (h * w)
        assert (area >= scales[i][0] - slack).all() and (area <= scales[i][1] + slack).all()
        for mine, theirs in [(area, ref[:, 2] * ref[:, 3] / (h * w)), (top[:, i] / h, ref[:, 0] / h),
                             (np.log(cw[:, i] / ch[:, i]), np.log(ref[:, 3] / ref[:, 2]))]:
            assert stats.ks_2samp(mine, theirs).pvalue > 1e-3


def _torchvision_view(crop: np.ndarray, view: dict) -> np.ndarray:
    """What DINO's transforms do to an already resized crop, given the draws: torchvision's tensor
    ops for flip and ColorJitter's adjustments (in `order`), scipy's Gaussian for the blur."""
    import torch
    from scipy import ndimage

    from simpool_jax.convert.torch_env import ensure_torchvision_importable

    ensure_torchvision_importable()
    import torchvision.transforms.functional as F

    t = torch.from_numpy(crop).permute(2, 0, 1)
    if view["flip"]:
        t = F.hflip(t)
    adjust = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue]
    if view["jitter"]:
        for i in view["order"]:
            t = adjust[i](t, float(view["factors"][i]))
    x = t.permute(1, 2, 0).numpy()
    if view["gray"]:
        x = np.repeat((x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None], 3, -1)
    if view["blur"]:
        x = np.stack([ndimage.gaussian_filter(x[..., c], view["sigma"], mode="nearest", truncate=6 / view["sigma"])
                      for c in range(3)], -1)
    if view["solarize"]:
        x = np.where(x >= 128 / 255, 1 - x, x)
    return x


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 3, 0, 1)])
@pytest.mark.parametrize("flip, gray, blur, solarize", [(True, False, True, True), (False, True, False, False)])
def test_dino_view_applies_its_draws(order, flip, gray, blur, solarize):
    """dino_view with hand-set draws equals torchvision/scipy applying the same draws to the same
    resized crop; the jitter order matters (brightness 1.4 clips), so a wrong order fails."""
    img = photo(120, 90)
    view = {"box": [10, 20, 60, 50], "flip": flip, "jitter": True, "order": list(order),
            "factors": [1.4, 0.7, 1.2, 0.08], "gray": gray, "blur": blur, "sigma": 1.3, "solarize": solarize}
    out = dino_view(tf.constant(img), {k: tf.constant(v) for k, v in view.items()}, size=32, blur_p=0.5,
                    solarize_p=0.2, mean=(0, 0, 0), std=(1, 1, 1)).numpy()
    crop = resized_crop(tf.constant(img), *view["box"], 32).numpy()
    np.testing.assert_allclose(out, _torchvision_view(crop, view), atol=2e-3)
    other = _torchvision_view(crop, {**view, "order": list(order[::-1])})
    assert np.abs(out - other).max() > 2e-2


def test_dino_view_skips_ops_its_policy_never_applies():
    """A crop policy with blur / solarise probability 0 ignores those draws (DINO never solarises
    global crop 1 or the local crops)."""
    img = tf.constant(photo(60, 50))
    view = {"box": tf.constant([0, 0, 60, 50]), "flip": tf.constant(False), "jitter": tf.constant(False),
            "order": tf.range(4), "factors": tf.ones(4), "gray": tf.constant(False), "blur": tf.constant(True),
            "sigma": tf.constant(1.5), "solarize": tf.constant(True)}
    plain = dino_view(img, view, 24, blur_p=0.0, solarize_p=0.0, mean=(0, 0, 0), std=(1, 1, 1)).numpy()
    np.testing.assert_array_equal(plain, resized_crop(img, 0, 0, 60, 50, 24).numpy())
