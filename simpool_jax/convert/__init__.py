"""PyTorch weights -> our parameter dict (strict: no silent skips).

`variables_from_torch(model, state_dict, naming)` maps a timm- or DINO-named state_dict onto a
`simpool_jax.model.Model`. Torch itself is only needed to produce the state_dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from simpool_jax.convert.keys import module_key_fn
from simpool_jax.convert.state_dict import CheckpointMismatchError, variables_from_state_dict
from simpool_jax.model import Model

# Tensors torch keeps that have no counterpart in a Flax model.
ALWAYS_IGNORED = r"num_batches_tracked$"


def variable_shapes(model: Model, image_size: int = 224) -> dict[str, Any]:
    """The model's variable tree as ShapeDtypeStructs (no memory, no compute)."""
    images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))


def variables_from_torch(
    model: Model, state_dict: Mapping[str, Any], naming: str = "timm", ignore: str | None = None
) -> dict[str, Any]:
    """Strictly convert a torch state_dict (tensors or arrays) into `model`'s variables.

    ignore: extra regex of checkpoint keys allowed to stay unused (besides num_batches_tracked).
    Raises CheckpointMismatchError listing every missing, unused or mis-shaped key.
    """
    pattern = ALWAYS_IGNORED if ignore is None else f"{ALWAYS_IGNORED}|{ignore}"
    return variables_from_state_dict(
        state_dict, variable_shapes(model), module_key_fn(model, naming), ignore=pattern
    )


__all__ = ["CheckpointMismatchError", "variable_shapes", "variables_from_torch"]
