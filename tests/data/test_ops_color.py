"""Colour ops against torchvision.transforms.functional, PIL and scipy, and their probabilities."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageFilter, ImageOps
from scipy import ndimage

from helpers import draws, eager_and_mapped, photo, within
from simpool_jax.convert.torch_env import ensure_torchvision_importable
from simpool_jax.data import get_pp
from simpool_jax.data.ops import color


@pytest.fixture(scope="module")
def F():
    ensure_torchvision_importable()
    import torchvision.transforms.functional as F

    return F


@pytest.fixture(scope="module")
def img():
    return photo(48, 40)


@pytest.mark.parametrize("name, ours, factor", [
    ("adjust_brightness", color.adjust_brightness, 1.3),
    ("adjust_contrast", color.adjust_contrast, 0.7),
    ("adjust_contrast", color.adjust_contrast, 1.4),
    ("adjust_saturation", color.adjust_saturation, 1.2),
    ("adjust_saturation", color.adjust_saturation, 0.6),
    ("adjust_hue", color.adjust_hue, 0.08),
    ("adjust_hue", color.adjust_hue, -0.1),
])
def test_adjustments_match_torchvision(F, img, name, ours, factor):
    import torch

    x = img.astype(np.float32) / 255
    ref = getattr(F, name)(torch.from_numpy(x).permute(2, 0, 1), factor).permute(1, 2, 0).numpy()
    out = ours(tf.constant(x), factor).numpy()
    # torchvision's grayscale weights are 0.2989/0.587/0.114 (PIL's 0.299/...): a few 1e-4 apart.
    np.testing.assert_allclose(out, ref, atol=2e-4 if "hue" not in name else 1e-3)


def test_grayscale_is_pil_luma(img):
    out = get_pp("grayscale(p=1.0)")({"image": tf.constant(img)})["image"].numpy()
    ref = np.asarray(Image.fromarray(img).convert("L"), np.float32) / 255
    assert np.allclose(out, out[..., :1])
    np.testing.assert_allclose(out[..., 0], ref, atol=0.5 / 255 + 1e-6)  # PIL rounds to uint8


def test_blur_matches_scipy_gaussian_and_pil(img):
    x = img.astype(np.float32) / 255
    out = color.blur(tf.constant(x), 1.7, radius=6).numpy()
    ref = np.stack([ndimage.gaussian_filter(x[..., c], 1.7, mode="nearest", truncate=6 / 1.7) for c in range(3)], -1)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # PIL's GaussianBlur (DINO's op) approximates the Gaussian with box filters: close, not equal.
    pil = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=1.7))) / 255
    assert np.abs(out - pil).mean() < 1.5 / 255


def test_solarize_is_pil(img):
    out = get_pp("solarize(p=1.0)")({"image": tf.constant(img)})["image"].numpy()
    ref = np.asarray(ImageOps.solarize(Image.fromarray(img), 128)) / 255
    np.testing.assert_allclose(out, ref, atol=1e-6)


@pytest.mark.parametrize("spec, p", [("color_jitter(p=0.8)", 0.8), ("grayscale(p=0.2)", 0.2), ("blur(p=0.5)", 0.5),
                                     ("solarize(p=0.2)", 0.2), ("blur(p=0.1)", 0.1)])
def test_application_probabilities(img, spec, p):
    x = tf.constant(img[:8, :8])
    n = 1500
    out = draws(lambda s: get_pp(spec)({"image": x, "_rng": s})["image"], n)
    changed = np.abs(out - img[:8, :8] / 255.0).max(axis=(1, 2, 3)) > 1e-6
    assert within(changed.mean(), p, n), changed.mean()


def test_jitter_factor_ranges(img):
    x = tf.constant(img[:8, :8].astype(np.float32) / 255 * 0.5)  # no clipping at 1.4x
    n = 1000
    out = draws(lambda s: color.color_jitter(x, s, brightness=0.4, contrast=0, saturation=0, hue=0, p=1.0), n)
    ratio = out.reshape(n, -1).mean(1) / x.numpy().mean()
    assert ratio.min() >= 0.6 - 1e-5 and ratio.max() <= 1.4 + 1e-5
    # U[0.6, 1.4]: mean 1, sd 0.4/sqrt(3); both within 4 standard errors.
    assert abs(ratio.mean() - 1) < 4 * 0.231 / np.sqrt(n) and abs(ratio.std() - 0.231) < 0.02
    hue = draws(lambda s: color.color_jitter(x, s, brightness=0, contrast=0, saturation=0, hue=0.1, p=1.0), 200)
    assert np.abs(hue - x.numpy()).max() > 0.01  # the hue branch runs when it is the only one


@pytest.mark.parametrize("spec", ["color_jitter", "grayscale", "blur", "solarize", "normalize", "to_rgb"])
def test_color_ops_eager_equals_mapped(spec):
    data = {"image": tf.constant(photo(20, 24)), "_rng": tf.constant([5, 6], tf.int64)}
    eager, mapped = eager_and_mapped(get_pp(spec), data)
    for k in eager:
        np.testing.assert_allclose(eager[k], mapped[k], atol=1e-6)
