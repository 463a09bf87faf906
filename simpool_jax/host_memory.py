"""Keep XLA:CPU's per-step scratch memory mapped between steps, so steps stop page-faulting it in.

XLA:CPU gives each execution of a compiled step one block for its temporary buffers: 405 MB for
the main job's DINO step, 1.75 GB for the ViT-S/16 DINO step at batch 4. glibc serves a block
above its mmap threshold (32 MiB at most) with a fresh `mmap` and unmaps it on `free`, so every
step touches its whole scratch block as new pages: 104k page faults per main-job step, 461k per
ViT-S step, 0.2 and 2.3 s of system time on the 2-vCPU machine (a quarter to a third of the step).

Three settings keep the block:
- `mallopt(M_MMAP_MAX, 0)`: large blocks come from the heap instead of their own mappings;
- `mallopt(M_TRIM_THRESHOLD, -1)`: `free` never hands the heap's top back to the kernel
  (mallopt(3): -1 disables trimming);
- synchronous CPU dispatch (`jax_cpu_enable_async_dispatch` False): the calling thread, whose
  malloc arena is the main heap, allocates the block. With asynchronous dispatch a PjRt worker
  thread allocates it from a thread arena, whose heaps are 64 MiB at most, so glibc maps large
  blocks there anyway.
The price: the process keeps its peak host memory until it exits (the peak itself is unchanged),
and Python waits for each CPU step before it dispatches the next (the input pipeline's prefetch
threads still overlap the step). `GLIBC_TUNABLES` can set the malloc part, but only from outside
the process, and not the dispatch. Without glibc nothing is changed; on a GPU / TPU backend only
the CPU client (host-side computations) dispatches synchronously.
"""

from __future__ import annotations

import ctypes
import platform

import jax
from jax._src import xla_bridge  # backends_are_initialized: no public equivalent in jax 0.10

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # <malloc.h>
SETTINGS = {M_MMAP_MAX: 0, M_TRIM_THRESHOLD: -1}


def keep_cpu_scratch_memory() -> bool:
    """Apply the settings above if JAX computes on the CPU and libc is glibc; whether it did.

    Call it before anything creates JAX's backends (the dispatch mode is fixed when the CPU client
    is made); once they exist it changes nothing and returns False. It initialises the backends
    itself, so on several hosts call it after `jax.distributed.initialize`.
    """
    if xla_bridge.backends_are_initialized() or platform.libc_ver()[0] != "glibc":
        return False
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    if jax.default_backend() != "cpu":
        return False
    libc = ctypes.CDLL("libc.so.6")
    for param, value in SETTINGS.items():
        if libc.mallopt(param, value) != 1:
            raise OSError(f"glibc refused mallopt({param}, {value})")
    return True
