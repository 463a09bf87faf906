"""Device mesh, sharding rules and host -> global batches: JAX's own parallelism, no pmap.

One `Mesh` with a `data` axis and an optional `fsdp` axis. The batch is split over both axes;
parameters and optimizer state are replicated over `data` and, with fsdp > 1, sharded over
`fsdp` along their largest divisible dimension (big_vision's "fsdp" rule). Everything is
created and updated under `jax.jit` with these shardings, so XLA inserts the collectives.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

BATCH_AXES = ("data", "fsdp")


DISTRIBUTED_ENV = {"coordinator_address": "SIMPOOL_COORDINATOR_ADDRESS",
                   "num_processes": "SIMPOOL_NUM_PROCESSES", "process_id": "SIMPOOL_PROCESS_ID"}


def distributed_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """`jax.distributed.initialize` arguments given by the SIMPOOL_* variables of DISTRIBUTED_ENV.

    Unset ones are left out, so JAX detects them (Slurm, Open MPI, Cloud TPU, Kubernetes, or
    JAX_COORDINATOR_ADDRESS); set them all to run anywhere else, e.g. processes on one machine.
    """
    environ = os.environ if environ is None else environ
    settings: dict[str, Any] = {}
    for arg, name in DISTRIBUTED_ENV.items():
        value = environ.get(name, "").strip()
        if not value:
            continue
        if arg == "coordinator_address":
            if not value.rpartition(":")[2].isdigit():
                raise ValueError(f"{name} must be host:port, got {value!r}")
            settings[arg] = value
        elif value.isdigit():
            settings[arg] = int(value)
        else:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return settings


def maybe_initialize_distributed(enabled: bool | None = None) -> None:
    """`jax.distributed.initialize()` for multi-process runs (before any other JAX call).

    Enabled by the argument or the SIMPOOL_DISTRIBUTED=1 environment variable, with the
    arguments of `distributed_settings`. On CPU the processes talk through JAX's default
    cross-process collectives (gloo; JAX_CPU_COLLECTIVES_IMPLEMENTATION picks another).
    """
    if enabled is None:
        enabled = os.environ.get("SIMPOOL_DISTRIBUTED", "0") == "1"
    if enabled:
        jax.distributed.initialize(**distributed_settings())


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
