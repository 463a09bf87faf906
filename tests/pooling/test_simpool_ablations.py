"""SimPool's Table-10 options against float64 numpy (simpool_jax.pooling.simpool_ablations), and
the defaults against SimPool itself (same parameters in, same outputs out)."""

import numpy as np
import pytest
from pooler_checks import as_numpy, random_params, rng_for, run
from reference import np_layer_norm


def np_ablation(x, p, gamma=None, use_beta=False, min_over="batch", num_heads=1, iterations=1,
                query_init="gap", similarity="dot", shared_qk=False, eps=1e-6):
    b, n, d = x.shape
    z = np_layer_norm(x, p["norm_patches"]["scale"], p["norm_patches"]["bias"])
    wk = p["wk"]["kernel"]
    wq = wk if shared_qk else p["wq"]["kernel"]
    keys = z @ wk
    u = x.mean(1) if query_init == "gap" else np.repeat(p["u0"][None], b, 0)
    if gamma is not None:
        low = z.min() if min_over == "batch" else z.min(axis=(1, 2), keepdims=True)
        v = z - low + eps
    dh = d // num_heads
    for _ in range(iterations):
        q = u @ wq
        new_u, maps = np.zeros((b, d)), np.zeros((b, num_heads, n))
        for i in range(b):
            for h in range(num_heads):
                c = slice(h * dh, (h + 1) * dh)
                qh, kh = q[i, c], keys[i, :, c]
                if similarity == "dot":
                    s = kh @ qh
                elif similarity == "cosine":
                    s = kh @ qh / np.linalg.norm(kh, axis=-1) / np.linalg.norm(qh)
                else:
                    s = -np.sum((kh - qh) ** 2, axis=-1)
                a = np.exp(s / np.sqrt(dh) - np.max(s / np.sqrt(dh)))
                maps[i, h] = a / a.sum()
                if gamma is None:
                    new_u[i, c] = maps[i, h] @ z[i, :, c]
                else:
                    new_u[i, c] = (maps[i, h] @ v[i, :, c] ** gamma) ** (1 / gamma)
        u = new_u
    if gamma is not None and use_beta:
        u = u + p["beta"]
    return u, maps.mean(1)


CASES = [
    {},
    {"gamma": 2.0},
    {"gamma": 1.25, "use_beta": True, "min_over": "sample"},
    {"num_heads": 4},
    {"num_heads": 2, "gamma": 2.0},
    {"iterations": 3},
    {"iterations": 2, "gamma": 2.0, "min_over": "sample"},
    {"query_init": "learnable"},
    {"similarity": "cosine"},
    {"similarity": "l2", "gamma": 2.0},
    {"shared_qk": True},
]


@pytest.mark.parametrize("shape", [(1, 6, 8), (3, 10, 16)])
@pytest.mark.parametrize("options", CASES, ids=str)
def test_ablation_matches_numpy(options, shape):
    rng = rng_for("ablation", options, shape)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    params = random_params("simpool_ablation", options, shape, (1, shape[1]), rng)
    pooled, attention = run("simpool_ablation", options, params, x, (1, shape[1]))
    ref, ref_attention = np_ablation(x.astype(np.float64), as_numpy(params), **options)
    np.testing.assert_allclose(attention, ref_attention, atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(pooled, ref, atol=1e-5, rtol=1e-5)
    if options.get("shared_qk"):
        assert "wq" not in params


@pytest.mark.parametrize("options", [{}, {"gamma": 2.0}, {"gamma": 1.25, "use_beta": True}],
                         ids=str)
def test_defaults_are_simpool(options):
    rng = rng_for("ablation-vs-simpool", options)
    x = rng.standard_normal((2, 9, 8)).astype(np.float32)
    params = random_params("simpool", options, x.shape, (3, 3), rng)
    for a, b in zip(run("simpool", options, params, x, (3, 3)),
                    run("simpool_ablation", options, params, x, (3, 3))):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("options,message", [({"similarity": "cos"}, "similarity"),
                                             ({"query_init": "zero"}, "query_init"),
                                             ({"num_heads": 3}, "num_heads")])
def test_bad_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        random_params("simpool_ablation", options, (1, 4, 8), (2, 2), rng_for("bad"))
