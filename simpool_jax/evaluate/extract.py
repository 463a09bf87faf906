"""Features of a whole evaluation split, from global batches with padding masks.

With several processes every process gets the features of all of them (each holds only its own
shards of a global batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import jax
import numpy as np
from jax.experimental import multihost_utils


def extract_features(forward: Callable[[jax.Array], jax.Array], batches: Iterable[dict]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(features, labels) of the real examples: padded ones (mask False) are dropped.

    forward: jitted images -> (B, D) features; batches: dicts with 'image', 'label', 'mask'.
    """
    features, labels = [], []
    for batch in batches:
        out, mask, label = multihost_utils.process_allgather(
            (forward(batch["image"]), batch["mask"], batch["label"]), tiled=True)
        mask = np.asarray(mask, bool)
        features.append(np.asarray(out)[mask])
        labels.append(np.asarray(label)[mask])
    return np.concatenate(features), np.concatenate(labels)
