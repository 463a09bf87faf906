"""Weighted k-NN classification on l2-normalised features, as DINO's eval_knn.py.

For each test feature: cosine similarity to every training feature, the k most similar,
votes exp(sim / T) summed per class, classes ranked by votes; top-1 / top-5 accuracy per k.
Memory stays bounded: test features go in chunks and, for each chunk, the training bank is
scanned in chunks with a running top-k, so a 1.28M x D bank never becomes a full similarity
matrix (peak about test_chunk x (bank_chunk + k) floats beyond the bank itself). Bank chunks are
normalised as they are scanned: a normalised copy of the bank (and numpy's x * x temporary for
its norms) made the peak three banks, ~5.7 GiB for ImageNet's 1.28M x 384.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from simpool_jax.heads import l2_normalize


def _unit_rows(x: np.ndarray) -> jax.Array:
    """Rows of x as float32, divided by max(||row||, 1e-12) (torch's F.normalize)."""
    return l2_normalize(jnp.asarray(x, jnp.float32))


@jax.jit
def _merge_topk(best_sims, best_idx, sims, offset):
    k = best_sims.shape[1]
    idx = offset + jnp.broadcast_to(jnp.arange(sims.shape[1]), sims.shape)
    all_sims = jnp.concatenate([best_sims, sims], axis=1)
    all_idx = jnp.concatenate([best_idx, idx], axis=1)
    top, where = jax.lax.top_k(all_sims, k)
    return top, jnp.take_along_axis(all_idx, where, axis=1)


def nearest(test: np.ndarray, bank: np.ndarray, k: int, bank_chunk: int = 65536
            ) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarities, indices) of the k most similar bank rows, most similar first."""
    sims = jnp.full((len(test), k), -jnp.inf, jnp.float32)
    idx = jnp.zeros((len(test), k), jnp.int32)
    t = _unit_rows(test)
    for start in range(0, len(bank), bank_chunk):
        chunk = _unit_rows(bank[start:start + bank_chunk])
        sims, idx = _merge_topk(sims, idx, t @ chunk.T, start)
    return np.asarray(sims), np.asarray(idx)


def check_knn_settings(ks: Sequence[int], temperature: float) -> None:
    """ValueError unless every k is a positive integer and the temperature is positive (callers
    that evaluate at the end of training check at start-up)."""
    if not ks or any(isinstance(k, bool) or int(k) != k or k < 1 for k in ks):
        raise ValueError(f"k-NN ks must be positive integers, got {tuple(ks)}")
    if not temperature > 0:
        raise ValueError(f"k-NN temperature must be positive, got {temperature}")


def knn_accuracy(
    train_features: np.ndarray, train_labels: np.ndarray, test_features: np.ndarray,
    test_labels: np.ndarray, ks: Sequence[int] = (10, 20, 100, 200), temperature: float = 0.07,
    num_classes: int | None = None, test_chunk: int = 256, bank_chunk: int = 65536,
) -> dict[int, dict[str, float]]:
    """{k: {'top1': %, 'top5': %}}. Features are l2-normalised here (chunk by chunk, the inputs
    are not copied or changed); k is capped at the bank size; top-5 counts min(5, num_classes)
    ranked classes."""
    check_knn_settings(ks, temperature)
    train_labels = np.asarray(train_labels, np.int64)
    test_labels = np.asarray(test_labels, np.int64)
    num_classes = num_classes or int(max(train_labels.max(), test_labels.max()) + 1)
    k_max = min(max(ks), len(train_features))
    hits = {k: np.zeros(2) for k in ks}
    for start in range(0, len(test_features), test_chunk):
        sims, idx = nearest(test_features[start:start + test_chunk], train_features, k_max,
                            bank_chunk)
        labels = test_labels[start:start + test_chunk]
        neighbour_labels = train_labels[idx]
        weights = np.exp(sims / temperature)
        for k in ks:
            kk = min(k, k_max)
            votes = np.zeros((len(labels), num_classes))
            np.add.at(votes, (np.arange(len(labels))[:, None], neighbour_labels[:, :kk]), weights[:, :kk])
            ranked = np.argsort(-votes, axis=1, kind="stable")
            correct = ranked == labels[:, None]
            hits[k] += [correct[:, 0].sum(), correct[:, :min(5, num_classes)].any(1).sum()]
    n = len(test_features)
    return {k: {"top1": 100 * h[0] / n, "top5": 100 * h[1] / n} for k, h in hits.items()}
