"""RandAugment ops against the PIL operations timm's RandAugment calls, and the op end to end."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from helpers import eager_and_mapped, photo
from simpool_jax.data import get_pp
from simpool_jax.data.ops import randaug as ra

GREY = (128, 128, 128)


@pytest.fixture(scope="module")
def img():
    return photo(40, 48)


def run(fn, img, *args):
    return fn(tf.constant(img / 255.0, tf.float32), *args).numpy()


@pytest.mark.parametrize("ours, pil", [
    (ra.autocontrast, ImageOps.autocontrast),
    (ra.equalize, ImageOps.equalize),
    (lambda x: ra.posterize(x, 2), lambda im: ImageOps.posterize(im, 2)),
    (lambda x: ra.solarize_threshold(x, 90.0), lambda im: ImageOps.solarize(im, 90)),
    (lambda x: ra.solarize_add(x, 99.0), lambda im: im.point([min(255, i + 99) if i < 128 else i for i in range(256)] * 3)),
])
def test_pixel_ops_equal_pil(img, ours, pil):
    low_contrast = (img * 0.6 + 40).astype(np.uint8)  # so autocontrast has work to do
    ref = np.asarray(pil(Image.fromarray(low_contrast))) / 255.0
    np.testing.assert_allclose(run(ours, low_contrast), ref, atol=1e-6)


@pytest.mark.parametrize("ours, enhance, factor, tol", [
    (ra.adjust_saturation, ImageEnhance.Color, 1.6, 1.0),
    (ra.adjust_contrast, ImageEnhance.Contrast, 0.4, 1.0),
    (ra.adjust_brightness, ImageEnhance.Brightness, 1.5, 1.0),
    (ra.sharpness, ImageEnhance.Sharpness, 1.8, 1.5),
    (ra.sharpness, ImageEnhance.Sharpness, 0.3, 1.5),
])
def test_enhance_ops_match_pil(img, ours, enhance, factor, tol):
    ref = np.asarray(enhance(Image.fromarray(img)).enhance(factor)) / 255.0
    out = run(ours, img, factor)
    assert np.abs(out - ref).max() <= tol / 255 + 1.0 / 255  # PIL rounds once, we do not
    assert np.abs(out - ref).mean() < 0.6 / 255


@pytest.mark.parametrize("ours, pil", [
    (lambda x: ra.rotate(x, 17.0, 0.5), lambda im: im.rotate(17, Image.BILINEAR, fillcolor=GREY)),
    (lambda x: ra.affine(x, (1, 0.25, 0, 0, 1, 0), 0.5), lambda im: im.transform(im.size, Image.AFFINE, (1, 0.25, 0, 0, 1, 0), Image.BILINEAR, fillcolor=GREY)),
    (lambda x: ra.affine(x, (1, 0, 0, -0.2, 1, 0), 0.5), lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 0, -0.2, 1, 0), Image.BILINEAR, fillcolor=GREY)),
    (lambda x: ra.affine(x, (1, 0, 9, 0, 1, -5), 0.5), lambda im: im.transform(im.size, Image.AFFINE, (1, 0, 9, 0, 1, -5), Image.BILINEAR, fillcolor=GREY)),
])
def test_geometric_ops_match_pil(img, ours, pil):
    ref = np.asarray(pil(Image.fromarray(img))) / 255.0
    out = run(ours, img)
    # Same geometry; bilinear weights and the fill at the border differ by a pixel fraction.
    assert np.abs(out - ref).mean() < 3.0 / 255, np.abs(out - ref).mean() * 255


def test_randaug_op(img):
    x = tf.constant(img)
    assert np.allclose(get_pp("randaug(prob=0.0)")({"image": x})["image"].numpy(), img / 255.0)
    ds = tf.data.Dataset.range(60).map(lambda i: get_pp("randaug(2, 9)")({"image": x, "_rng": tf.stack([i, 0])}))
    outs = np.stack([d["image"] for d in ds.as_numpy_iterator()])
    assert outs.shape == (60, 40, 48, 3) and outs.min() >= 0 and outs.max() <= 1
    changed = np.abs(outs - img / 255.0).max(axis=(1, 2, 3)) > 1e-6
    # Each of 2 layers applies an op with p=0.5: P(no op at all) = 0.25, and a few ops can be no-ops.
    assert 0.55 < changed.mean() < 0.95
    eager, mapped = eager_and_mapped(get_pp("randaug(2, 9)"), {"image": x, "_rng": tf.constant([1, 2], tf.int64)})
    np.testing.assert_allclose(eager["image"], mapped["image"], atol=1e-6)
