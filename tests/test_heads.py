"""The DINO head's column norms (simpool_jax.heads.column_sums_of_squares) against float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from simpool_jax.heads import column_sums_of_squares


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_column_sums_of_squares_and_gradient_match_float64(dtype):
    """37 rows (not a multiple of the loop's unroll of 8), 50 columns: the sums, accumulated in
    float32, and the gradient 2 v g, against float64 numpy, in v's dtype."""
    rng = np.random.default_rng(0)
    v = jnp.asarray(rng.standard_normal((37, 50)), dtype)
    g = jnp.asarray(rng.standard_normal(50), dtype)
    sums, vjp = jax.vjp(jax.jit(column_sums_of_squares), v)
    (dv,) = vjp(g)
    assert sums.dtype == dv.dtype == dtype and sums.shape == (50,)
    v64, g64 = np.asarray(v, np.float64), np.asarray(g, np.float64)
    rtol = 1e-6 if dtype == jnp.float32 else 2**-8
    np.testing.assert_allclose(np.asarray(sums, np.float64), (v64**2).sum(0), rtol=rtol)
    np.testing.assert_allclose(np.asarray(dv, np.float64), 2 * v64 * g64, rtol=rtol, atol=1e-30)
