"""OTK against float64 numpy: OTK's own multiplicative Sinkhorn (u then v scalings, token mass
k/N, reference mass 1) on exp(x . w / eps), then the plan-weighted sums
(simpool_jax.pooling.otk)."""

import numpy as np
import pytest
from pooler_checks import as_numpy, random_params, rng_for, run


def np_otk(x, refs, eps, iterations):
    b, n, _ = x.shape
    k = refs.shape[0]
    out = []
    for i in range(b):
        kernel = np.exp(x[i] @ refs.T / eps)                  # (N, k)
        u, v = np.ones(n), np.ones(k)
        for _ in range(iterations):
            u = (k / n) / (kernel @ v)
            v = 1.0 / (u @ kernel)
        plan = u[:, None] * kernel * v[None, :]
        out.append(plan.T @ x[i])                             # (k, D)
    return np.stack(out)


@pytest.mark.parametrize("shape,k,eps,iterations",
                         [((1, 6, 4), 2, 1.0, 1), ((3, 10, 5), 4, 0.5, 10),
                          ((2, 7, 3), 3, 2.0, 30)])
@pytest.mark.parametrize("mode", ["concat", "max"])
def test_otk_matches_numpy(shape, k, eps, iterations, mode):
    kwargs = dict(num_references=k, eps=eps, iterations=iterations, readout=mode)
    rng = rng_for("otk", shape, k, mode)
    x = rng.standard_normal(shape).astype(np.float32)
    params = random_params("otk", kwargs, shape, (1, shape[1]), rng)
    pooled, attention = run("otk", kwargs, params, x, (1, shape[1]))
    ref = np_otk(x.astype(np.float64), as_numpy(params)["references"], eps, iterations)
    ref = ref.reshape(shape[0], -1) if mode == "concat" else ref.max(1)
    np.testing.assert_allclose(pooled, ref, atol=1e-5, rtol=1e-5)
    assert attention is None


def test_one_reference_is_gap():
    """With k = 1 every token carries mass 1/N whatever the similarities: OTK degenerates to GAP."""
    rng = rng_for("otk-gap")
    x = rng.standard_normal((2, 9, 6)).astype(np.float32)
    params = random_params("otk", {"num_references": 1}, x.shape, (3, 3), rng)
    pooled, _ = run("otk", {"num_references": 1}, params, x, (3, 3))
    np.testing.assert_allclose(pooled, x.mean(1), atol=1e-6)
