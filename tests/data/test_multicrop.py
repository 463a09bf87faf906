"""DINO multi-crop: fixed shapes and dtypes, per-crop independence, reproducibility from `_rng`."""

import numpy as np
import pytest
import tensorflow as tf

from helpers import eager_and_mapped, photo, within
from simpool_jax.data import get_pp

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
