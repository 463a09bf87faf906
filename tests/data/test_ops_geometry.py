"""Crops, resizes, flips against torchvision / PIL (the references the PyTorch recipes use)."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import stats

from helpers import draws, eager_and_mapped, photo, within
from simpool_jax.convert.torch_env import ensure_torchvision_importable
from simpool_jax.data import get_pp
from simpool_jax.data.ops.geometry import resize_to, rrc_params


def torchvision():
    ensure_torchvision_importable()
    import torchvision

    return torchvision


@pytest.mark.parametrize("hw, scale", [((300, 200), (0.08, 1.0)), ((120, 160), (0.05, 0.4))])
def test_rrc_params_match_torchvision_statistics(hw, scale):
    import torch

    T = torchvision().transforms
    h, w = hw
    n = 2000
    ours = draws(lambda s: tf.stack(rrc_params(h, w, s, scale)), n)
    torch.manual_seed(0)
    ref = np.array([T.RandomResizedCrop.get_params(torch.zeros(1, h, w), list(scale), [3 / 4, 4 / 3])
                    for _ in range(n)])
    top, left, ch, cw = ours.T
    assert (top >= 0).all() and (left >= 0).all() and (top + ch <= h).all() and (left + cw <= w).all()
    area = ch * cw / (h * w)
    # Rounding w and h to integers moves the area by at most ~(w + h + 1) / (h * w).
    slack = (ch + cw + 1) / (h * w)
    assert (area >= scale[0] - slack).all() and (area <= scale[1] + slack).all()
    for mine, theirs in [(area, ref[:, 2] * ref[:, 3] / (h * w)), (np.log(cw / ch), np.log(ref[:, 3] / ref[:, 2])),
                         (top / h, ref[:, 0] / h), (left / w, ref[:, 1] / w)]:
        assert stats.ks_2samp(mine, theirs).pvalue > 1e-3


def test_rrc_fallback_is_torchvision_centre_crop():
    import torch

    T = torchvision().transforms
    h, w = 10, 400  # no crop of area >= 90% fits a 3/4..4/3 ratio: fallback
    ours = tuple(int(v) for v in rrc_params(h, w, tf.constant([1, 2], tf.int64), (0.9, 1.0)))
    ref = T.RandomResizedCrop.get_params(torch.zeros(1, h, w), [0.9, 1.0], [3 / 4, 4 / 3])
    assert ours == tuple(ref) == (0, 193, 10, 13)


@pytest.mark.parametrize("method, pil", [("bicubic", Image.BICUBIC), ("bilinear", Image.BILINEAR)])
@pytest.mark.parametrize("box, size", [((30, 40, 150, 120), 64), ((10, 5, 40, 30), 64)])  # down- and upscaling
def test_crop_resize_matches_pil(box, size, method, pil):
    img = photo(200, 240).copy()
    img[38:42] = 255  # a white-black edge inside both boxes: bicubic overshoots there and must be
    img[42:45] = 0  # clipped as PIL's uint8 output is
    top, left, h, w = box
    ours = resize_to(tf.constant(img[top:top + h, left:left + w]), size, size, method).numpy()
    ref = np.asarray(Image.fromarray(img).resize((size, size), pil, box=(left, top, left + w, top + h))) / 255.0
    diff = np.abs(ours - ref)
    print(f"mean |diff| {diff.mean() * 255:.3f}/255, max {diff.max() * 255:.2f}/255")
    assert diff.mean() < 1.0 / 255 and diff.max() < 16 / 255
    assert ours.min() >= 0 and ours.max() <= 1 + 1e-6  # bilinear is not clipped: its weights are >= 0


def test_resize_small_central_crop_match_torchvision():
    T = torchvision().transforms
    img = photo(301, 457)
    ours = get_pp("resize_small(64)|central_crop(56)")({"image": tf.constant(img)})["image"].numpy()
    ref = T.Compose([T.Resize(64, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(56)])(Image.fromarray(img))
    ref = np.asarray(ref) / 255.0
    assert ours.shape == ref.shape == (56, 56, 3)
    # Same geometry: sizes and offsets (97 - 56 = 41 -> round(20.5) = 20) exactly, pixels up to resampling.
    assert np.abs(ours - ref).mean() < 1.0 / 255


@pytest.mark.parametrize("p", [0.5, 0.2])
def test_flip_probability(p):
    img = tf.constant(np.arange(12, dtype=np.float32).reshape(1, 4, 3) / 12)
    out = draws(lambda s: get_pp(f"flip_lr(p={p})")({"image": img, "_rng": s})["image"], 2000)
    flipped = np.all(out == img.numpy()[:, ::-1], axis=(1, 2, 3))
    kept = np.all(out == img.numpy(), axis=(1, 2, 3))
    assert (flipped | kept).all() and within(flipped.mean(), p, 2000)


@pytest.mark.parametrize("spec", ["rrc(24, scale=(0.2, 1))", "resize(17)", "resize_small(20)|central_crop(18)",
                                  "flip_lr", "decode", "decode_rrc(24)"])
def test_geometry_ops_eager_equals_mapped(spec):
    data = {"image": tf.constant(photo(32, 40)), "_rng": tf.constant([3, 4], tf.int64)}
    eager, mapped = eager_and_mapped(get_pp(spec), data)
    for k in eager:
        np.testing.assert_array_equal(eager[k], mapped[k])


def jpeg_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_decode_rrc_crops_like_decode_then_rrc():
    """Same seed -> same box; only the crop window is decoded, so pixels differ at most on the
    window's edge (libjpeg's chroma upsampling there sees no neighbours), never in the bulk."""
    encoded = tf.constant(jpeg_bytes(photo(150, 200)))
    png = tf.io.encode_png(photo(150, 200))
    fused, plain = get_pp("decode_rrc(64, scale=(0.1, 0.6))"), get_pp("decode|rrc(64, scale=(0.1, 0.6))")
    for i in range(8):
        data = {"image": encoded, "_rng": tf.constant([i, 5], tf.int64)}
        a, b = fused(dict(data))["image"].numpy(), plain(dict(data))["image"].numpy()
        assert a.shape == (64, 64, 3)
        assert np.abs(a - b).max() < 0.06 and np.abs(a - b).mean() < 2e-3
        data["image"] = png  # not a JPEG: exactly decode|rrc
        np.testing.assert_array_equal(fused(dict(data))["image"], plain(dict(data))["image"])


@pytest.mark.parametrize("src", [(40, 30), (300, 200), (40, 300), (64, 64)])  # grow, shrink, mixed, same
def test_bilinear_resize_equals_antialiased_kernel_whichever_path(src):
    img = tf.constant(photo(*src))
    ours = resize_to(img, 64, 64, "bilinear").numpy()
    ref = tf.image.resize(img, (64, 64), "bilinear", antialias=True).numpy() / 255.0
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)  # float rounding only (1/255 = 4e-3)
