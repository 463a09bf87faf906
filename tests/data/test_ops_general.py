"""decode / to_rgb / normalize / onehot / keep against PIL and closed forms."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from helpers import eager_and_mapped, photo
from simpool_jax.data import get_pp


def encode(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, quality=90) if fmt == "JPEG" else Image.fromarray(array).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP"])
def test_decode_matches_pil(fmt):
    data = encode(photo(37, 53), fmt)
    ours = get_pp("decode")({"image": tf.constant(data)})["image"].numpy()
    ref = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert ours.dtype == np.uint8 and ours.shape == ref.shape
    assert np.abs(ours.astype(int) - ref).max() <= 1  # accurate integer DCT: PIL's decoder to +-1


def test_decode_grayscale_png_to_rgb():
    gray = photo(20, 20)[..., 0]
    ours = get_pp("decode")({"image": tf.constant(encode(gray, "PNG"))})["image"].numpy()
    np.testing.assert_array_equal(ours, np.repeat(gray[..., None], 3, -1))
    one = get_pp("to_rgb")({"image": tf.constant(gray[..., None])})["image"].numpy()
    np.testing.assert_array_equal(one, np.repeat(gray[..., None], 3, -1))


@pytest.mark.parametrize("spec, mean, std", [
    ("normalize('imagenet')", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("normalize('half')", (0.5,) * 3, (0.5,) * 3),
    ("normalize((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))", (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)),
    ("normalize((0, 0, 0), (1, 2, 1))", (0, 0, 0), (1, 2, 1)),  # written as ints
])
def test_normalize(spec, mean, std):
    img = photo(9, 11)
    out = get_pp(spec)({"image": tf.constant(img)})["image"].numpy()
    np.testing.assert_allclose(out, (img / 255.0 - np.array(mean)) / np.array(std), atol=1e-5)
    batch = get_pp(spec)({"image": tf.constant(np.stack([img, img[::-1]]))})["image"].numpy()
    np.testing.assert_allclose(batch[1], (img[::-1] / 255.0 - np.array(mean)) / np.array(std), atol=1e-5)


def test_onehot_label_smoothing_closed_form():
    out = get_pp("onehot(5, smoothing=0.1)")({"label": tf.constant(3, tf.int64)})["labels"].numpy()
    np.testing.assert_allclose(out, [0.02, 0.02, 0.02, 0.92, 0.02], atol=1e-7)  # timm: 1 - 0.1 + 0.1/5
    assert abs(out.sum() - 1) < 1e-6


def test_keep():
    data = {"image": tf.zeros([2, 2, 3]), "label": tf.constant(1), "extra": tf.constant(0), "_rng": tf.constant([1, 2])}
    assert sorted(get_pp("keep('image', 'label')")(data)) == ["_rng", "image", "label"]
    with pytest.raises(KeyError, match="nope"):
        get_pp("keep('nope')")(data)


@pytest.mark.parametrize("spec", ["decode|onehot(10, smoothing=0.1)|keep('image', 'labels')"])
def test_general_ops_eager_equals_mapped(spec):
    data = {"image": tf.constant(encode(photo(16, 16), "JPEG")), "label": tf.constant(4, tf.int64)}
    eager, mapped = eager_and_mapped(get_pp(spec), data)
    for k in eager:
        np.testing.assert_array_equal(eager[k], mapped[k])
