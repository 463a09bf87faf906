"""Mixup / CutMix: images and labels mixed by the same weights, lambda's law, the pipeline hook."""

import numpy as np
import tensorflow as tf
from scipy import stats

from helpers import draws
from simpool_jax.data import get_pp


def batch(n=6, h=12, w=10, k=7):
    """Random images; sample i has class i, so sample 0 and its partner (the last) differ."""
    x = np.random.RandomState(0).rand(n, h, w, 3).astype(np.float32)
    return x, np.eye(k, dtype=np.float32)[np.arange(n)]


def test_mixup_is_a_convex_blend_with_label_weights():
    x, y = batch()
    pp = get_pp("mixup(mixup_alpha=0.8, cutmix_alpha=0)")
    for i in range(3):  # the pixels are blended by the same lambda as the labels
        out = pp({"image": tf.constant(x), "labels": tf.constant(y), "_rng": tf.constant([[0, i]], tf.int64)})
        lam = out["labels"].numpy()[0, 0]
        np.testing.assert_allclose(out["image"].numpy(), lam * x + (1 - lam) * x[::-1], atol=1e-5)
    labels = draws(lambda s: pp({"image": tf.constant(x), "labels": tf.constant(y), "_rng": s[None]})["labels"], 400)
    assert stats.kstest(labels[:, 0, 0], stats.beta(0.8, 0.8).cdf).pvalue > 1e-3  # lambda ~ Beta(0.8, 0.8)


def test_cutmix_pixel_fraction_equals_label_weight():
    x, y = batch()
    for i in range(20):
        out = get_pp("mixup(mixup_alpha=0, cutmix_alpha=1.0)")(
            {"image": tf.constant(x), "labels": tf.constant(y), "_rng": tf.constant([[1, i]], tf.int64)})
        img, lab = out["image"].numpy(), out["labels"].numpy()
        from_self = np.isclose(img, x).all(-1) & ~np.isclose(img, x[::-1]).all(-1)
        from_other = np.isclose(img, x[::-1]).all(-1) & ~np.isclose(img, x).all(-1)
        assert (from_self | from_other).all()  # every pixel comes whole from one of the two
        lam = from_self[0].mean()
        np.testing.assert_allclose(lab, lam * y + (1 - lam) * y[::-1], atol=1e-6)


def test_mixup_prob_zero_is_identity():
    x, y = batch()
    out = get_pp("mixup(prob=0.0)")({"image": tf.constant(x), "labels": tf.constant(y)})
    np.testing.assert_array_equal(out["image"].numpy(), x)
    np.testing.assert_array_equal(out["labels"].numpy(), y)
