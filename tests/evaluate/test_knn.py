"""Weighted k-NN against a brute-force numpy implementation of DINO's eval_knn.py."""

import numpy as np
import pytest

from simpool_jax.evaluate.knn import knn_accuracy


def brute_force(train, train_labels, test, test_labels, k, temperature, num_classes):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    sims = test @ train.T
    top1 = top5 = 0
    for i in range(len(test)):
        order = np.argsort(-sims[i], kind="stable")[:k]
        votes = np.zeros(num_classes)
        for j in order:
            votes[train_labels[j]] += np.exp(sims[i, j] / temperature)
        ranking = np.argsort(-votes, kind="stable")
        top1 += ranking[0] == test_labels[i]
        top5 += test_labels[i] in ranking[:min(5, num_classes)]
    return 100 * top1 / len(test), 100 * top5 / len(test)


@pytest.mark.parametrize("num_classes", [3, 10])
def test_matches_brute_force_for_every_k_chunked_or_not(num_classes):
    rng = np.random.default_rng(num_classes)
    centers = rng.standard_normal((num_classes, 16))
    train_labels = rng.integers(0, num_classes, 300)
    test_labels = rng.integers(0, num_classes, 70)
    train = centers[train_labels] + 1.5 * rng.standard_normal((300, 16))
    test = centers[test_labels] + 1.5 * rng.standard_normal((70, 16))
    ks = (1, 5, 20, 100)
    full = knn_accuracy(train, train_labels, test, test_labels, ks=ks, temperature=0.07,
                        num_classes=num_classes)
    chunked = knn_accuracy(train, train_labels, test, test_labels, ks=ks, temperature=0.07,
                           num_classes=num_classes, test_chunk=16, bank_chunk=37)
    assert full == chunked
    for k in ks:
        top1, top5 = brute_force(train, train_labels, test, test_labels, k, 0.07, num_classes)
        assert full[k]["top1"] == pytest.approx(top1) and full[k]["top5"] == pytest.approx(top5)
    assert full[20]["top1"] > 100 / num_classes + 10  # clustered data: far above chance


def test_k_larger_than_the_bank_and_exact_matches():
    train = np.eye(4, 8)
    labels = np.array([0, 1, 2, 1])
    result = knn_accuracy(train, labels, train, labels, ks=(1, 200), num_classes=3)
    assert result[1]["top1"] == 100.0  # each test point's nearest neighbour is itself
    # k = 200 is capped at the 4 bank entries; top-5 with 3 classes counts all 3.
    assert result[200]["top1"] == 100.0 and result[200]["top5"] == 100.0
