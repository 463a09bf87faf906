"""Optimal Transport Kernel embedding (OTK, Mialon et al., ICLR 2021): Table 1, group 2.

k learnable references w_1..w_k (the OTK layer's weight, init U(-1/sqrt k, 1/sqrt k)):
    S_nj = x_n . w_j                            (dot product, as OTK's `multihead_attn`)
    P    = Sinkhorn(exp(S / eps))              token marginals k/N, reference marginals 1;
           `iterations` rounds of (rows, then columns) as OTK's `sinkhorn`, so every column of
           the returned plan sums to exactly 1
    z_j  = sum_n P_nj x_n                      (B, k, D), then `readout` (OTK concatenates)
Run in the log domain (same iterates, no overflow of exp(S / eps)). The kernel embedding psi of
the paper's V = psi(X) is the identity: a deep backbone's tokens are the embedding (OTK's own
Nystrom layer is a separate module). Output D' = k*D with 'concat', D with 'max'.
With k = 1 the plan is uniform whatever S is, so OTK degenerates to GAP: use k >= 2.
No single attention map: the plan P (B, k, N) is sown as intermediates['transport_plan'].
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.pooling.common import check_iterative, readout


def sinkhorn_log(logits: jax.Array, iterations: int) -> jax.Array:
    """log of the plan for kernel exp(logits) (B, N, k): rows sum to k/N, then columns to 1."""
    n, k = logits.shape[-2:]
    log_row_mass = math.log(k / n)

    def round_(_, potentials):
        f = log_row_mass - jax.nn.logsumexp(logits + potentials[1][:, None, :], axis=-1)
        return f, -jax.nn.logsumexp(logits + f[:, :, None], axis=-2)

    f0 = jnp.zeros(logits.shape[:-1], logits.dtype)
    f, g = jax.lax.fori_loop(0, iterations, round_, (f0, jnp.zeros_like(logits[:, 0])))
    return logits + f[:, :, None] + g[:, None, :]


class OTK(nn.Module):
    """Transport the tokens onto k learned references. Returns (pooled (B, k*D) or (B, D), None)."""

    num_references: int = 4
    eps: float = 0.1
    iterations: int = 10
    readout: str = "concat"

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, None]:
        check_iterative("OTK", self.iterations, self.readout)
        k, d = self.num_references, tokens.shape[-1]
        bound = k**-0.5
        init = functools.partial(jax.random.uniform, minval=-bound, maxval=bound)
        references = self.param("references", init, (k, d))
        x = tokens.astype(jnp.float32)
        logits = jnp.einsum("bnd,kd->bnk", x, references) / self.eps
        plan = jnp.exp(sinkhorn_log(logits, self.iterations))
        self.sow("intermediates", "transport_plan", jnp.swapaxes(plan, 1, 2))
        return readout(jnp.einsum("bnk,bnd->bkd", plan, x), self.readout), None
