"""The pp spec language: parsing, errors at build time, string and list specs."""

import numpy as np
import pytest
import tensorflow as tf

from simpool_jax.data import OPS, get_pp
from simpool_jax.data.registry import parse_op


def test_parse_op_literals():
    assert parse_op("rrc(224, scale=(0.08, 1), method='bilinear')") == (
        "rrc", (224,), {"scale": (0.08, 1), "method": "bilinear"})
    assert parse_op(" flip_lr ") == ("flip_lr", (), {})


@pytest.mark.parametrize("spec, message", [
    ("decode|no_such_op(3)", "unknown pp op 'no_such_op'"),
    ("rrc(224, scal=(0.1, 1))", "rrc"),
    ("rrc(size=x)", "literals"),
    ("rrc(224", "cannot parse"),
    ("normalize('nope')", "unknown normalisation"),
])
def test_bad_specs_fail_when_built(spec, message):
    with pytest.raises(ValueError, match=message) as e:
        pp = get_pp(spec)
        pp({"image": tf.zeros([8, 8, 3])})
    if "unknown pp op" in message:
        assert "rrc" in str(e.value) and "dino_multicrop" in str(e.value)  # lists what exists


def test_string_and_list_specs_agree():
    image = tf.constant(np.random.RandomState(0).randint(0, 256, (20, 30, 3)), tf.uint8)
    a = get_pp("central_crop(16)|normalize('half')")({"image": image})
    b = get_pp(["central_crop(16)", OPS["normalize"]("half")])({"image": image})
    np.testing.assert_array_equal(a["image"].numpy(), b["image"].numpy())
    expected = (image.numpy()[2:18, 7:23] / 255.0 - 0.5) / 0.5
    np.testing.assert_allclose(a["image"].numpy(), expected, atol=1e-6)
