"""What the pooler tests share: informative random parameters, running a registered pooler, and
the contract checks (B = 1, jit, batch sharded over 8 fake devices, finite gradients).

Fresh initialisations hide mistakes (zero biases, unit norms, layer scales of 1e-5 make whole
branches vanish), so `random_params` redraws every leaf at O(1) scale before a reference test.
"""

from __future__ import annotations

import zlib

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from simpool_jax.pooling import get_pooler

# XLA compiles are what these tests spend their time on; LLVM's expensive passes buy nothing
# for tiny shapes. (Not xla_backend_optimization_level=0: it recomputes LN(X) inconsistently,
# so jnp.min's gradient finds no element equal to the minimum and divides 0 by 0.)
FAST_COMPILE = {"xla_llvm_disable_expensive_passes": True}


def rng_for(*key) -> np.random.Generator:
    """A generator seeded by the test case, so each case has its own fixed inputs."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def random_params(name: str, kwargs: dict, shape: tuple, grid: tuple, rng: np.random.Generator,
                  overrides: dict | None = None) -> dict:
    """Parameters of pooler `name` for tokens of `shape`, every leaf redrawn: LayerNorm scales
    1 + 0.2 n, kernels n / sqrt(fan-in), everything else 0.5 n; `overrides` maps a leaf's last
    name to a function (rng, shape) -> array for leaves that need a particular range."""
    pooler = get_pooler(name, **kwargs)
    variables = jax.eval_shape(
        lambda: pooler.init(jax.random.PRNGKey(0), jnp.zeros(shape, jnp.float32), grid))

    def draw(path, leaf):
        last = path[-1].key
        if overrides and last in overrides:
            value = overrides[last](rng, leaf.shape)
        elif last == "scale":
            value = 1 + 0.2 * rng.standard_normal(leaf.shape)
        elif last == "kernel":
            value = rng.standard_normal(leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
        else:
            value = 0.5 * rng.standard_normal(leaf.shape)
        return jnp.asarray(value, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, variables.get("params", {}))


def run(name: str, kwargs: dict, params: dict, tokens: np.ndarray, grid: tuple):
    """(pooled, attention) of pooler `name`, jitted, as numpy (attention None where it has none)."""
    pooler = get_pooler(name, **kwargs)
    forward = jax.jit(lambda p, x: pooler.apply({"params": p}, x, grid),
                      compiler_options=FAST_COMPILE)
    pooled, attention = forward(params, jnp.asarray(tokens, jnp.float32))
    return np.asarray(pooled), None if attention is None else np.asarray(attention)


def as_numpy(params: dict) -> dict:
    """The parameter tree in float64 numpy, for the references."""
    return jax.tree.map(lambda a: np.asarray(a, np.float64), params)


def check_contract(name: str, kwargs: dict, d: int = 8, grid: tuple = (3, 4)) -> None:
    """The jitted forward and gradient, with the batch sharded over 8 devices, give the eager
    single-device outputs; the gradients (parameters and tokens) are finite. One compiled
    function covers jit and sharding at once (XLA compiles are the cost of these tests). B = 1
    and the values themselves are the reference tests' job."""
    assert jax.device_count() == 8, "tests expect 8 fake devices (tests/conftest.py)"
    rng = rng_for(name, kwargs)
    n = grid[0] * grid[1]
    tokens = jnp.asarray(rng.standard_normal((16, n, d)), jnp.float32)
    params = random_params(name, kwargs, tokens.shape, grid, rng)
    pooler = get_pooler(name, **kwargs)
    eager = pooler.apply({"params": params}, tokens, grid)
    weights = jnp.asarray(rng.standard_normal(eager[0].shape), jnp.float32)

    def loss(p, x):
        pooled, attention = pooler.apply({"params": p}, x, grid)
        value = jnp.sum(pooled * weights) + (0.0 if attention is None else jnp.sum(attention**2))
        return value, (pooled, attention)

    mesh = Mesh(np.array(jax.devices()), ("data",))
    sharded_tokens = jax.device_put(tokens, NamedSharding(mesh, P("data")))
    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True),
                   compiler_options=FAST_COMPILE)
    (_, outputs), grads = step(params, sharded_tokens)
    assert outputs[0].sharding.spec[0] == "data", "the batch stays sharded"
    assert len(jax.tree.leaves(eager)) == len(jax.tree.leaves(outputs))
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(outputs)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    for g in jax.tree.leaves(grads):
        assert np.all(np.isfinite(g))
    assert np.abs(grads[1]).max() > 0
