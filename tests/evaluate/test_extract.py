"""Eval features of a SimPool model with the batch-wide gamma minimum: a padded last batch gives
the features the official code gets from its smaller last batch."""

import jax
import jax.numpy as jnp
import numpy as np

from markers import needs_fashion_mnist
from simpool_jax.data import make_eval_iterator
from simpool_jax.evaluate.extract import extract_features
from simpool_jax.model import build_model

PP = "decode(3)|resize(28)|normalize('half')"


@needs_fashion_mnist
def test_padded_last_batch_keeps_simpool_batch_minimum_of_the_real_examples():
    model = build_model(dict(backbone="vit_tiny", pooling="simpool", recipe="dino",
                             pooling_kwargs=dict(gamma=1.25, min_over="batch"),
                             backbone_kwargs=dict(width=32, depth=1, num_heads=2, patch_size=7,
                                                  posemb_grid=(4, 4))))
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 3)))
    forward = jax.jit(lambda x: model.apply(variables, x)["features"])
    mesh = jax.make_mesh((4,), ("data",))
    config = dict(name="fashion_mnist", split="test", pp=PP, limit=20)
    images = np.asarray(next(iter(make_eval_iterator({**config, "batch_size": 20}, mesh)))["image"])
    # The official loader: batches of 8, 8 and a last one of 4.
    official = np.concatenate([forward(images[i:i + 8]) for i in (0, 8, 16)])
    ours, labels = extract_features(forward, make_eval_iterator({**config, "batch_size": 8}, mesh))
    assert ours.shape == (20, 32) and labels.shape == (20,)
    np.testing.assert_allclose(ours, official, atol=1e-5)
    # Zero padding would have entered the minimum and moved the last batch's features.
    zero_padded = forward(np.concatenate([images[16:], np.zeros_like(images[:4])]))[:4]
    assert np.abs(zero_padded - official[16:]).max() > 1e-3
