"""Slot Attention (Locatello et al., NeurIPS 2020) as a pooler: Table 1, group 2 of the paper.

    X = LN(tokens),  K = X W_K,  V = X W_V                     (no bias)
    S0 = k learned slot initialisations (k, D)
    repeat `iterations` times:
        q_j  = LN(s_j) W_Q
        A    = softmax over slots j of (x_n W_K . q_j / sqrt(D)) + 1e-8, then each slot's
               column renormalised over the N tokens (eta_1(sigma_2) of the paper's table)
        s_j <- GRU(input = sum_n A_nj v_n, state = s_j)
        s_j <- s_j + MLP(LN(s_j))                                MLP: D -> D -> D, ReLU
    output the k slots through `readout`
Slot size D and MLP width D give the paper's Table 8 cost (11 D^2 on top of the backbone:
3 D^2 projections, 6 D^2 GRU, 2 D^2 MLP). The paper reads out by the max over per-slot
logits; a pooler sees no head, so the default 'max' takes the max over slot features, and
'stack' hands (B, k, D) to a model that applies the head per slot (see `common.readout`).
The original draws the initial slots from a learned Gaussian; we learn k separate slot
initialisations instead (a common variant): no rng, deterministic features at inference.
No single attention map: the last iteration's A (B, k, N) is sown as
intermediates['slot_attention'].
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from simpool_jax.models.layers import Dense, LayerNorm
from simpool_jax.pooling.common import check_iterative, readout


class SlotUpdate(nn.Module):
    """One iteration: slots compete for the tokens, then GRU and residual MLP (docstring above)."""

    eps: float

    @nn.compact
    def __call__(
        self, slots: jax.Array, keys_values: tuple[jax.Array, jax.Array]
    ) -> tuple[jax.Array, jax.Array]:
        keys, values = keys_values
        d = slots.shape[-1]
        query = Dense(d, use_bias=False, name="q")(LayerNorm(name="norm_slots")(slots))
        logits = jnp.einsum("bnd,bkd->bkn", keys, query) * d**-0.5
        attention = jax.nn.softmax(logits, axis=1) + self.eps
        attention = attention / attention.sum(axis=-1, keepdims=True)
        slots, _ = nn.GRUCell(d, name="gru")(slots, jnp.einsum("bkn,bnd->bkd", attention, values))
        hidden = nn.relu(Dense(d, name="mlp_fc1")(LayerNorm(name="norm_mlp")(slots)))
        return slots + Dense(d, name="mlp_fc2")(hidden), attention


class SlotAttention(nn.Module):
    """k slots competing for the tokens: (pooled (B, D), or (B, k*D) with 'concat', None)."""

    num_slots: int = 3
    iterations: int = 3
    readout: str = "max"
    eps: float = 1e-8

    @nn.compact
    def __call__(
        self, tokens: jax.Array, grid: tuple[int, int], cls: jax.Array | None = None
    ) -> tuple[jax.Array, None]:
        check_iterative("Slot Attention", self.iterations, self.readout)
        b, _, d = tokens.shape
        x = LayerNorm(name="norm_inputs")(tokens)
        keys = Dense(d, use_bias=False, name="k")(x)
        values = Dense(d, use_bias=False, name="v")(x)
        init = self.param("slots_init", nn.initializers.normal(1.0), (self.num_slots, d))
        slots = jnp.broadcast_to(init, (b, self.num_slots, d)).astype(tokens.dtype)
        # One compiled iteration whatever `iterations` is: the update's parameters are shared.
        update = nn.scan(SlotUpdate, variable_broadcast="params", split_rngs={"params": False},
                         in_axes=nn.broadcast, length=self.iterations)
        slots, attention = update(self.eps, name="update")(slots, (keys, values))
        self.sow("intermediates", "slot_attention", attention[-1])
        return readout(slots, self.readout), None
