"""Slot Attention against float64 numpy written from Locatello et al. (simpool_jax.pooling.slot):
softmax over slots, +1e-8, renormalised over tokens, torch-style GRU, residual MLP."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from pooler_checks import FAST_COMPILE, as_numpy, random_params, rng_for, run
from reference import np_layer_norm

from simpool_jax.pooling import get_pooler


def layer_norm(x, p):
    return np_layer_norm(x, p["scale"], p["bias"])


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def gru(h, x, p):
    """PyTorch GRUCell: r, z gates; n = tanh(W_in x + b_in + r * (W_hn h + b_hn)); the biases of
    W_ir/W_hr (and z) are summed into one, which is how flax stores them."""
    lin = lambda name, v: v @ p[name]["kernel"] + p[name].get("bias", 0.0)  # noqa: E731
    r = sigmoid(lin("ir", x) + lin("hr", h))
    z = sigmoid(lin("iz", x) + lin("hz", h))
    n = np.tanh(lin("in", x) + r * lin("hn", h))
    return (1 - z) * n + z * h


def np_slot(x, p, iterations):
    b, n, d = x.shape
    u = p["update"]
    inputs = layer_norm(x, p["norm_inputs"])
    k, v = inputs @ p["k"]["kernel"], inputs @ p["v"]["kernel"]
    slots = np.repeat(p["slots_init"][None], b, axis=0)
    for _ in range(iterations):
        q = layer_norm(slots, u["norm_slots"]) @ u["q"]["kernel"]
        logits = np.einsum("bnd,bkd->bnk", k, q) / np.sqrt(d)
        a = np.exp(logits - logits.max(-1, keepdims=True))
        a = a / a.sum(-1, keepdims=True) + 1e-8          # softmax over slots
        a = a / a.sum(1, keepdims=True)                   # weighted mean over tokens
        slots = gru(slots, np.einsum("bnk,bnd->bkd", a, v), u["gru"])
        fc1, fc2 = u["mlp_fc1"], u["mlp_fc2"]
        hidden = np.maximum(layer_norm(slots, u["norm_mlp"]) @ fc1["kernel"] + fc1["bias"], 0)
        slots = slots + hidden @ fc2["kernel"] + fc2["bias"]
    return slots


@pytest.mark.parametrize("shape,num_slots,iterations,mode", [
    ((1, 5, 4), 2, 1, "max"), ((3, 12, 6), 3, 3, "concat"), ((2, 7, 8), 4, 2, "stack")])
def test_slot_attention_matches_numpy(shape, num_slots, iterations, mode):
    kwargs = dict(num_slots=num_slots, iterations=iterations, readout=mode)
    rng = rng_for("slot", shape, num_slots, mode)
    x = rng.standard_normal(shape).astype(np.float32)
    params = random_params("slot", kwargs, shape, (1, shape[1]), rng)
    pooled, attention = run("slot", kwargs, params, x, (1, shape[1]))
    slots = np_slot(x.astype(np.float64), as_numpy(params), iterations)
    ref = {"max": slots.max(1), "concat": slots.reshape(shape[0], -1), "stack": slots}[mode]
    np.testing.assert_allclose(pooled, ref, atol=2e-5, rtol=2e-5)
    assert attention is None


def test_per_slot_attention_is_sown():
    """The slots' maps (B, k, N) are there for visualisation; each slot's row is a weighted mean."""
    pooler, rng = get_pooler("slot"), rng_for("slot-sow")
    x = jnp.asarray(rng.standard_normal((2, 6, 8)), jnp.float32)
    params = random_params("slot", {}, x.shape, (2, 3), rng)
    forward = jax.jit(lambda p: pooler.apply({"params": p}, x, (2, 3), mutable=["intermediates"]),
                      compiler_options=FAST_COMPILE)
    (maps,) = forward(params)[1]["intermediates"]["slot_attention"]
    assert maps.shape == (2, 3, 6)
    np.testing.assert_allclose(maps.sum(-1), 1.0, rtol=1e-6)
