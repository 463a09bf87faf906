"""Strict PyTorch state_dict -> Flax variables, driven by the Flax model's own parameter tree.

For every leaf of the model (from `jax.eval_shape`, so nothing is allocated twice) we derive the
torch key from the module path (a per-architecture `module_key` function) and the leaf name, fetch
it and convert its layout. Any model leaf left unfilled, any checkpoint tensor left unused or any
shape mismatch raises one error that lists them all: a silent `strict=False` load is the classic
cause of "k-NN accuracy near random" after a port.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from flax import traverse_util

# Flax leaf name -> (torch parameter name, layout conversion torch -> flax).
_LEAF_RULES: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "scale": ("weight", lambda w: w),
    "bias": ("bias", lambda w: w),
    "mean": ("running_mean", lambda w: w),
    "var": ("running_var", lambda w: w),
    # Weight-normed DINO last layer: v (out, in) -> kernel (in, out); g (out, 1) -> (out,).
    "last_layer_v": ("last_layer.weight_v", lambda w: w.T),
    "last_layer_g": ("last_layer.weight_g", lambda w: w.reshape(-1)),
}


def _kernel(w: np.ndarray) -> np.ndarray:
    """Linear (out, in) -> (in, out); Conv (O, I, kh, kw) -> (kh, kw, I, O), depthwise included."""
    if w.ndim == 2:
        return w.T
    if w.ndim == 4:
        return w.transpose(2, 3, 1, 0)
    raise ValueError(f"kernel with {w.ndim} dims")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not fit the model: lists missing, unused and mis-shaped keys."""


def to_numpy(state_dict: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """torch tensors (or arrays) -> float32/int numpy arrays, on CPU, detached."""
    out = {}
    for key, value in state_dict.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        out[key] = np.asarray(value)
    return out


def variables_from_state_dict(
    state_dict: Mapping[str, Any],
    template: Mapping[str, Any],
    module_key: Callable[[tuple[str, ...]], str],
    ignore: str | None = None,
    allow_missing: str | None = None,
) -> dict[str, Any]:
    """Fill the variable tree `template` (leaves with .shape) from a torch `state_dict`.

    module_key: Flax module path (collection excluded) -> torch module prefix ('' for the root).
    ignore: regex of checkpoint keys that may stay unused (e.g. 'num_batches_tracked$').
    allow_missing: regex of torch keys that may be absent from the checkpoint (their leaves are
    left out of the result, for the caller to initialise) or left unused in it.
    Returns nested dicts of float32 numpy arrays: {'params': ..., ['batch_stats': ...]}.
    """
    source = to_numpy(state_dict)
    used: set[str] = set()
    missing, mismatched = [], []
    flat = {}
    for path, leaf in traverse_util.flatten_dict(dict(template)).items():
        modules, name = path[1:-1], path[-1]
        torch_name, convert = _LEAF_RULES.get(name, (name, lambda w: w))
        if name == "kernel":
            torch_name, convert = "weight", _kernel
        prefix = module_key(modules)
        key = f"{prefix}.{torch_name}" if prefix else torch_name
        if key not in source:
            if not (allow_missing and re.search(allow_missing, key)):
                missing.append(key)
            continue
        used.add(key)
        value = convert(source[key])
        if tuple(value.shape) != tuple(leaf.shape):
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} -> model {tuple(leaf.shape)}")
            continue
        flat[path] = np.asarray(value, dtype=leaf.dtype)
    allowed = "|".join(f"(?:{p})" for p in (ignore, allow_missing) if p)
    unused = sorted(k for k in source if k not in used and not (allowed and re.search(allowed, k)))
    if missing or unused or mismatched:
        lines = []
        for title, keys in (("missing in checkpoint", missing), ("unused checkpoint keys", unused),
                            ("shape mismatch", mismatched)):
            if keys:
                lines.append(f"{title} ({len(keys)}): " + ", ".join(keys[:40])
                             + (" ..." if len(keys) > 40 else ""))
        raise CheckpointMismatchError("checkpoint does not match the model:\n  " + "\n  ".join(lines))
    return traverse_util.unflatten_dict(flat)
