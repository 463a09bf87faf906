"""PyTorch weights -> our parameter dict (strict: no silent skips).

`variables_from_torch(model, state_dict, naming)` maps a timm- or DINO-named state_dict onto a
`simpool_jax.model.Model`; `load_torch_checkpoint(path)` reads an official SimPool / DINO / timm
file, works out the model it holds and returns `(model, variables, config)`. The command line
(`python -m simpool_jax.convert`) writes the result as a model directory.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import traverse_util

from simpool_jax.convert.detect import infer_model_config
from simpool_jax.convert.keys import module_key_fn
from simpool_jax.convert.state_dict import CheckpointMismatchError, variables_from_state_dict
from simpool_jax.convert.torch_checkpoint import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    read_checkpoint,
)
from simpool_jax.model import Model, build_model

# Tensors torch keeps that have no counterpart in a Flax model.
ALWAYS_IGNORED = r"num_batches_tracked$"


def variable_shapes(model: Model, image_size: int = 224) -> dict[str, Any]:
    """The model's variable tree as ShapeDtypeStructs (no memory, no compute)."""
    images = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
    return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), images))


def variables_from_torch(
    model: Model, state_dict: Mapping[str, Any], naming: str = "timm", ignore: str | None = None,
    allow_missing: str | None = None, seed: int = 0,
) -> dict[str, Any]:
    """Strictly convert a torch state_dict (tensors or arrays) into `model`'s variables.

    ignore: extra regex of checkpoint keys allowed to stay unused (besides num_batches_tracked).
    allow_missing: regex of torch keys that may be missing (initialised from `seed`, e.g. a new
    classifier) or left unused (e.g. a dropped classifier).
    Raises CheckpointMismatchError listing every missing, unused or mis-shaped key.
    """
    pattern = ALWAYS_IGNORED if ignore is None else f"{ALWAYS_IGNORED}|{ignore}"
    template = variable_shapes(model)
    loaded = variables_from_state_dict(state_dict, template, module_key_fn(model, naming),
                                       ignore=pattern, allow_missing=allow_missing)
    flat_loaded = traverse_util.flatten_dict(loaded)
    if len(flat_loaded) == len(traverse_util.flatten_dict(dict(template))):
        return loaded
    fresh = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 224, 224, 3), jnp.float32))
    flat = traverse_util.flatten_dict(jax.tree.map(jax.numpy.asarray, dict(fresh)))
    flat.update(flat_loaded)
    return traverse_util.unflatten_dict(flat)


def load_torch_checkpoint(
    path: str | Path, key: str | None = None, arch: str | None = None, recipe: str | None = None,
    gamma: Any = "auto", allow_missing: str | None = None, trust: bool = False,
) -> tuple[Model, dict[str, Any], dict[str, Any]]:
    """Read an official .pth / .pth.tar and return (model, variables, config record).

    key: 'teacher' (DINO default) / 'student' / 'state_dict' / 'state_dict_ema' (timm default when
    present). arch, recipe: override detection. allow_missing: regex of torch keys to leave out of
    the checkpoint (and allowed to be missing from it). gamma: 'auto', None or a float (γ is not stored
    in checkpoints; see `simpool_jax.convert.detect`). The record is {"model": build_model config,
    "source": {path, container, key, naming, notes}}; notes are also issued as warnings.
    """
    checkpoint = read_checkpoint(path, key=key, trust=trust)
    if allow_missing:  # dropped before detection, so e.g. '^fc\.' gives a model without classifier
        dropped = [k for k in checkpoint.state_dict if re.search(allow_missing, k)]
        for k in dropped:
            del checkpoint.state_dict[k]
        checkpoint.notes.append(f"--allow-missing {allow_missing!r}: left out {len(dropped)} "
                                "checkpoint tensors; model parameters it matches start from init")
    config, notes, naming = infer_model_config(
        checkpoint.state_dict, checkpoint.container, checkpoint.args, str(path),
        recipe=recipe, gamma=gamma, arch=arch)
    model = build_model(config)
    variables = variables_from_torch(model, checkpoint.state_dict, naming=naming,
                                     allow_missing=allow_missing)
    notes = checkpoint.notes + notes
    for note in notes:
        if note.startswith("WARNING"):
            warnings.warn(note, stacklevel=2)
    source = dict(path=str(Path(path).absolute()), container=checkpoint.container,
                  key=checkpoint.key, naming=naming, notes=notes)
    return model, variables, {"format": 1, "model": config, "source": source}


__all__ = ["CheckpointFormatError", "CheckpointMismatchError", "UnsafeCheckpointError",
           "load_torch_checkpoint", "variable_shapes", "variables_from_torch"]
