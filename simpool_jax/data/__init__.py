"""Input pipeline: TFDS / image-folder sources -> pp ops (tf.data, host CPU) -> global jax.Arrays.

    source = get_dataset("fashion_mnist", "train")           # or "imagenet2012", "folder:/path"
    pp = get_pp("decode|rrc(224, scale=(0.08, 1))|flip_lr|normalize('imagenet')")
    it = make_train_iterator(config.input, mesh)             # dicts of jax.Arrays sharded on "data"

The pipeline knows no model: images leave as NHWC float32, normalised by the pp spec.
"""

from simpool_jax.data.pipeline import (
    check_eval_inputs,
    check_labels_fit,
    make_eval_iterator,
    make_train_iterator,
)
from simpool_jax.data.registry import OPS, get_pp
from simpool_jax.data.sources import get_dataset

__all__ = ["get_dataset", "get_pp", "OPS", "make_train_iterator", "make_eval_iterator",
           "check_eval_inputs", "check_labels_fit"]
