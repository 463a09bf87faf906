"""SimPool with the design choices of the paper's Table 10 as options (ablations, not parity).

With the defaults this is exactly `simpool.SimPool` (same parameters, names and outputs). Per
sample, with Z = LN(X) (keys and values) and m heads of D/m channels (head h owns channel group h):
    u0   = mean_n x_n ('gap')  or  a learned vector ('learnable')
    for t = 0 .. T-1 (`iterations`; the framework's phi_X = X, phi_U = identity):
        q    = W_Q u_t,  k_n = W_K z_n                (W_Q = W_K with `shared_qk`)
        s_hn = sim(q_h, k_nh) / sqrt(D/m),  sim = dot | cosine | -||q_h - k_nh||^2
        a_h  = softmax_n(s_h)
        u_{t+1}[c] = f^-1( sum_n a_{h(c)n} f(v_nc) ),  c in head h(c)
    with f = identity, v = z (gamma None) or f(v) = v^gamma, v = z - min Z + eps (gamma set);
    u = u_T (+ beta). Attention returned: a of the last iteration, averaged over heads.
The scale 1/sqrt(D/m) is kept for every similarity (the paper's h = sigma_2(S / sqrt(d)) acts on
S whatever s is), so cosine logits are small and the attention close to uniform. Later
iterations query with the pooled vector, which lives in the space of Z (shifted when gamma is
set), not of X. Table 10's k > 1 queries are not here.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.models.layers import Dense, LayerNorm, trunc_normal_02
from simpool_jax.pooling.simpool import MIN_OVER

INITS = ("gap", "learnable")
SIMILARITIES = ("dot", "cosine", "l2")


def similarity(q: jax.Array, k: jax.Array, kind: str) -> jax.Array:
    """q (B, m, c), k (B, N, m, c) -> (B, m, N) before the 1/sqrt(c) scale."""
    if kind == "cosine":
        q = q / jnp.linalg.norm(q, axis=-1, keepdims=True)
        k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    dots = jnp.einsum("bhc,bnhc->bhn", q, k)
    if kind == "l2":
        q_norms, k_norms = jnp.sum(q**2, axis=-1), jnp.sum(k**2, axis=-1)
        return 2 * dots - q_norms[..., None] - jnp.moveaxis(k_norms, 1, 2)
    return dots


class SimPoolAblation(nn.Module):
    """SimPool with Table-10 options. Returns (pooled (B, D), attention (B, N))."""

    gamma: float | None = None
    use_beta: bool = False
    min_over: str = "batch"
    eps: float = 1e-6
    num_heads: int = 1
    iterations: int = 1
    query_init: str = "gap"
    similarity: str = "dot"
    shared_qk: bool = False

    def _check(self, d: int) -> None:
        options = ((self.min_over, MIN_OVER, "min_over"), (self.query_init, INITS, "query_init"),
                   (self.similarity, SIMILARITIES, "similarity"))
        for value, allowed, name in options:
            if value not in allowed:
                raise ValueError(f"SimPoolAblation {name}={value!r} not in {allowed}")
        if d % self.num_heads or self.iterations < 1:
            raise ValueError(f"need num_heads dividing {d} and iterations >= 1")

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, jax.Array]:
        x = tokens.astype(jnp.float32)
        b, n, d = x.shape
        self._check(d)
        m, c = self.num_heads, d // self.num_heads
        z = LayerNorm(name="norm_patches", dtype=jnp.float32)(x)
        linear = functools.partial(Dense, d, use_bias=False, kernel_init=trunc_normal_02)
        wk = linear(name="wk")
        wq = wk if self.shared_qk else linear(name="wq")
        k = wk(z).reshape(b, n, m, c)
        if self.query_init == "gap":
            u = x.mean(axis=1)
        else:
            u = jnp.broadcast_to(self.param("u0", trunc_normal_02, (d,)), (b, d))
        values = z
        if self.gamma is not None:
            low = jnp.min(z) if self.min_over == "batch" else jnp.min(z, axis=(1, 2), keepdims=True)
            values = (z - low + self.eps) ** self.gamma
        for _ in range(self.iterations):
            logits = similarity(wq(u).reshape(b, m, c), k, self.similarity) * c**-0.5
            attention = jax.nn.softmax(logits, axis=-1)
            u = jnp.einsum("bhn,bnhc->bhc", attention, values.reshape(b, n, m, c)).reshape(b, d)
            if self.gamma is not None:
                u = u ** (1.0 / self.gamma)
        if self.gamma is not None and self.use_beta:
            u = u + self.param("beta", nn.initializers.zeros, (1,))
        return u, attention.mean(axis=1)
