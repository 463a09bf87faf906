"""The train state: a plain dict pytree, created already sharded over the mesh.

{'params', 'batch_stats', 'opt', 'step'} and, with model EMA, {'ema_params', 'ema_batch_stats'}.
It is built by `jax.jit(init, out_shardings=...)` after `jax.eval_shape` told us its shapes, so
no host ever materialises the full unsharded state, and saved / restored whole by orbax.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh

from simpool_jax.parallel import state_shardings


def init_fn(model: Any, tx: optax.GradientTransformation, image_shape: tuple[int, ...],
            ema: bool) -> Callable[[jax.Array], dict]:
    """rng -> fresh train state (to be jitted with out_shardings)."""

    def init(rng: jax.Array) -> dict:
        variables = model.init(rng, jnp.zeros((2, *image_shape), jnp.float32))
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        state = {"params": params, "batch_stats": batch_stats, "opt": tx.init(params),
                 "step": jnp.zeros((), jnp.int32)}
        if ema:
            state.update(ema_params=params, ema_batch_stats=batch_stats)
        return state

    return init


def create_sharded(init: Callable[[jax.Array], dict], mesh: Mesh, rng: jax.Array
                   ) -> tuple[dict, Any]:
    """(state from `init(rng)`, created directly with the fsdp-rule shardings on `mesh`)."""
    shardings = state_shardings(mesh, jax.eval_shape(init, rng))
    return jax.jit(init, out_shardings=shardings)(rng), shardings


def create_state(model: Any, tx: optax.GradientTransformation, image_shape: tuple[int, ...],
                 mesh: Mesh, rng: jax.Array, ema: bool = False) -> tuple[dict, Any]:
    """(sharded supervised train state, its shardings) for `model` on `mesh`."""
    return create_sharded(init_fn(model, tx, image_shape, ema), mesh, rng)


def load_pretrained(state: dict, variables: dict, skip: str | None = None) -> tuple[dict, list[str]]:
    """Copy imported `variables` (params, batch_stats) into a fresh state (and its EMA copy).

    Every leaf of the state's params / batch_stats must come from `variables` with the same
    shape, except leaves whose 'a/b/c' path matches `skip` (e.g. '^head/' for a new classifier),
    which keep their fresh initialisation. Returns (state, skipped paths).
    """
    state = dict(state)
    skipped, problems = [], []
    for collection in ("params", "batch_stats"):
        fresh = traverse_util.flatten_dict(dict(state[collection]), sep="/")
        source = traverse_util.flatten_dict(dict(variables.get(collection, {})), sep="/")
        for path, leaf in fresh.items():
            if skip and re.search(skip, path):
                skipped.append(f"{collection}/{path}")
            elif path not in source:
                problems.append(f"{collection}/{path} missing")
            elif tuple(source[path].shape) != tuple(leaf.shape):
                problems.append(f"{collection}/{path}: {source[path].shape} vs {leaf.shape}")
            else:
                # From host memory: every process gives the whole value and keeps its shards
                # (a device array would need a cross-process transfer).
                fresh[path] = jax.device_put(np.asarray(source[path], leaf.dtype), leaf.sharding)
        extra = sorted(p for p in set(source) - set(fresh) if not (skip and re.search(skip, p)))
        problems += [f"{collection}/{p} not in the model" for p in extra]
        state[collection] = traverse_util.unflatten_dict(fresh, sep="/")
    if problems:
        raise ValueError("init_from does not match the model (set config.init_skip to a regex of "
                         "paths to keep fresh):\n  " + "\n  ".join(problems[:40]))
    if "ema_params" in state:
        state.update(ema_params=state["params"], ema_batch_stats=state["batch_stats"])
    return state, skipped
