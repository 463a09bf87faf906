"""Device mesh, sharding rules and host -> global batches: JAX's own parallelism, no pmap.

One `Mesh` with a `data` axis and an optional `fsdp` axis. The batch is split over both axes;
parameters and optimizer state are replicated over `data` and, with fsdp > 1, sharded over
`fsdp` along their largest divisible dimension (big_vision's "fsdp" rule). Everything is
created and updated under `jax.jit` with these shardings, so XLA inserts the collectives.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


def maybe_initialize_distributed(enabled: bool | None = None) -> None:
    """`jax.distributed.initialize()` for multi-host runs (before any other JAX call).

    Enabled by the argument or the SIMPOOL_DISTRIBUTED=1 environment variable; coordinator
    address, process count and id then come from JAX's usual environment / cluster detection.
    """
    if enabled is None:
        enabled = os.environ.get("SIMPOOL_DISTRIBUTED", "0") == "1"
    if enabled:
        jax.distributed.initialize()


def make_mesh(axes: Sequence[tuple[str, int]] = (("data", -1), ("fsdp", 1))) -> Mesh:
    """Mesh over all devices; one axis size may be -1 (all remaining devices)."""
    names = [name for name, _ in axes]
    if set(names) - set(BATCH_AXES):
        raise ValueError(f"mesh axes must be among {BATCH_AXES}, got {names}")
    sizes = [size for _, size in axes]
    n = jax.device_count()
    known = int(np.prod([s for s in sizes if s != -1]))
    if sizes.count(-1) > 1 or n % known:
        raise ValueError(f"mesh {dict(axes)} does not fit {n} devices")
    sizes = [n // known if s == -1 else s for s in sizes]
    if int(np.prod(sizes)) != n:
        raise ValueError(f"mesh {dict(zip(names, sizes))} uses {np.prod(sizes)} of {n} devices")
    return jax.make_mesh(tuple(sizes), tuple(names), axis_types=(AxisType.Auto,) * len(names))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every batch axis of the mesh."""
    return NamedSharding(mesh, P(tuple(a for a in mesh.axis_names if a in BATCH_AXES)))


def param_spec(shape: tuple[int, ...], fsdp: int, min_size: int = 2**14) -> P:
    """Shard the largest dimension divisible by `fsdp` over 'fsdp' (small arrays replicate)."""
    if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    for dim in sorted(range(len(shape)), key=lambda d: -shape[d]):
        if shape[dim] % fsdp == 0:
            spec = [None] * len(shape)
            spec[dim] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(mesh: Mesh, abstract_state: Any) -> Any:
    """NamedShardings for a (ShapeDtypeStruct) state tree by the fsdp rule."""
    fsdp = mesh.shape.get("fsdp", 1)
    return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(x.shape), fsdp)),
                        abstract_state)


def global_batch(mesh: Mesh, host_batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's slice of the batch -> global jax.Arrays sharded over the batch axes."""
    sharding = batch_sharding(mesh)
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), host_batch)
