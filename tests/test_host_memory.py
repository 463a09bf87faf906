"""keep_cpu_scratch_memory: a step's scratch block is faulted in once, not on every call.

The mechanism is process-wide (glibc settings, the CPU client's dispatch mode fixed when JAX makes
its backends), so each case runs in a fresh Python process that counts its own minor page faults
(`getrusage`) over repeated calls of a jitted function whose scratch block holds at least the
64 MiB product x @ x.T, twice glibc's largest mmap threshold (32 MiB). XLA:CPU reports no
`temp_size_in_bytes`, hence the size from the shapes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from simpool_jax.host_memory import keep_cpu_scratch_memory

ROOT = Path(__file__).resolve().parents[1]
PAGE = 4096
PRODUCT_BYTES = 4096 * 4096 * 4  # x @ x.T below

FAULT_COUNTER = """
import json, resource, sys
keep = sys.argv[1] == "keep"
from simpool_jax.host_memory import keep_cpu_scratch_memory
kept = keep and keep_cpu_scratch_memory()
import jax, jax.numpy as jnp
x = jnp.ones((4096, 2048)) / 2048
two_products = jax.jit(lambda x: (jnp.tanh(x @ x.T) @ x).sum())
compiled = two_products.lower(x).compile()
for _ in range(2):
    compiled(x).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
calls = 5
for _ in range(calls):
    compiled(x).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls
print(json.dumps(dict(kept=kept, faults=faults)))
"""


def faults_per_call(mode: str) -> dict:
    """Run FAULT_COUNTER in a fresh process on one CPU device."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-c", FAULT_COUNTER, mode], cwd=ROOT, env=env,
                            check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc settings")
def test_kept_scratch_block_is_not_faulted_in_again():
    default, kept = faults_per_call("default"), faults_per_call("keep")
    assert not default["kept"] and kept["kept"]
    # glibc's default maps the block afresh per call: every page of the product faults again.
    assert default["faults"] > PRODUCT_BYTES / PAGE
    # Kept, a call faults in under 1 % of that (Python and runtime bookkeeping).
    assert kept["faults"] < 0.01 * PRODUCT_BYTES / PAGE


def test_changes_nothing_once_backends_exist():
    import jax

    jax.devices()  # the backends exist: the CPU client's dispatch mode is fixed
    async_dispatch = jax.config.read("jax_cpu_enable_async_dispatch")
    assert keep_cpu_scratch_memory() is False
    assert jax.config.read("jax_cpu_enable_async_dispatch") == async_dispatch
