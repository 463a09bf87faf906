"""What a model costs: parameters (whole model and the pooler alone), forward FLOPs per image from
XLA's own count of the compiled eval forward, and eval forward throughput.

FLOPs are XLA's `cost_analysis()['flops']` of the jitted forward (a multiply-add counts 2, and
elementwise ops count too), divided by the batch size; papers often quote multiply-adds (half).
Throughput is the median of timed calls of that same compiled function after one warm-up call,
so compilation is excluded; on a shared machine it is indicative only.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import numpy as np


def count_params(tree: Any) -> int:
    """Number of scalars in a parameter tree."""
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(tree)))


def param_counts(variables: dict) -> tuple[int, int]:
    """(pooler parameters, model parameters): the pooler's are the `pool` submodule's."""
    params = variables["params"]
    return count_params(params.get("pool", {})), count_params(params)


def forward_costs(model: Any, variables: dict, image_shape: tuple[int, int, int],
                  batch_size: int = 256, repeats: int = 5) -> tuple[float, float]:
    """(forward FLOPs per image, eval images per second) of `model.apply` to the logits."""
    if batch_size < 1 or repeats < 1:
        raise ValueError(f"batch_size and repeats must be >= 1, got {batch_size}, {repeats}")
    images = jax.random.normal(jax.random.PRNGKey(0), (batch_size, *image_shape))
    forward = jax.jit(lambda v, x: model.apply(v, x)["logits"])
    compiled = forward.lower(variables, images).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older JAX: one dict per device
    flops = float(cost["flops"]) / batch_size
    jax.block_until_ready(compiled(variables, images))
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(variables, images))
        seconds.append(time.perf_counter() - start)
    return flops, batch_size / statistics.median(seconds)


__all__ = ["count_params", "param_counts", "forward_costs"]
