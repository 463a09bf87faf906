"""Features of a whole evaluation split, from global batches with padding masks."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import numpy as np


def extract_features(forward: Callable[[jax.Array], jax.Array], batches: Iterable[dict]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of the real examples: padded ones (mask False) are dropped.

    forward: jitted images -> (B, D) features; batches: dicts with 'image', 'label', 'mask'.
    """
    features, labels = [], []
    for batch in batches:
        out = jax.device_get(forward(batch["image"]))
        mask = np.asarray(jax.device_get(batch["mask"]), bool)
        features.append(np.asarray(out)[mask])
        labels.append(np.asarray(jax.device_get(batch["label"]))[mask])
    return np.concatenate(features), np.concatenate(labels)
