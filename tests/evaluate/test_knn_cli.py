"""eval_knn.py end to end on a model directory: its k-NN of the first Fashion-MNIST images equals
the brute-force k-NN (test_knn.py) of features computed here from the IDX files; a bad --k or
--temperature is a usage error before any work."""

import gzip
import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from markers import FASHION_MNIST_DIR, needs_fashion_mnist
from test_knn import brute_force

from simpool_jax.checkpoint import save_model_dir
from simpool_jax.model import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # eval_knn.py sits at the root
from eval_knn import main  # noqa: E402

LIMIT = 64
MODEL = dict(backbone="vit_tiny", pooling="simpool", recipe="dino", pooling_kwargs=dict(gamma=1.25),
             backbone_kwargs=dict(width=16, depth=1, num_heads=2, patch_size=4, posemb_grid=(7, 7)))


def idx(name: str, header: int) -> np.ndarray:
    with gzip.open(FASHION_MNIST_DIR / name) as f:
        return np.frombuffer(f.read()[header:], np.uint8)


def first_images(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The first LIMIT images of a split as the default eval pp gives them, and their labels."""
    prefix = "train" if split == "train" else "t10k"
    raw = idx(f"{prefix}-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:LIMIT]
    labels = idx(f"{prefix}-labels-idx1-ubyte.gz", 8)[:LIMIT]
    return np.repeat(((raw / 255.0 - 0.5) / 0.5)[..., None], 3, -1).astype(np.float32), labels


@needs_fashion_mnist
def test_eval_knn_equals_brute_force_on_features_computed_here(tmp_path):
    model = build_model(MODEL)
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 3), np.float32))
    save_model_dir(tmp_path / "model", MODEL, variables)
    out = tmp_path / "knn.json"
    assert main(["--checkpoint", str(tmp_path / "model"), "--dataset", "fashion_mnist",
                 "--limit", str(LIMIT), "--k", "1,5,20", "--temperature", "0.1",
                 "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["train_examples"], report["test_examples"]) == (LIMIT, LIMIT)
    # One batch per split (SimPool's minimum over the same 64 images as the CLI's padded batch).
    (train, train_labels), (test, test_labels) = map(first_images, ("train", "test"))
    features = [np.asarray(model.apply(variables, x, with_head=False)["features"], np.float64)
                for x in (train, test)]
    for k in (1, 5, 20):
        top1, top5 = brute_force(features[0], train_labels, features[1], test_labels, k, 0.1, 10)
        assert report["knn"][str(k)] == pytest.approx({"top1": top1, "top5": top5}, abs=1e-9), k
    assert 10 < report["knn"]["20"]["top1"] < 100  # random features still beat chance here


@pytest.mark.parametrize("option,value", [("--k", "0"), ("--k", "5,x"), ("--temperature", "0"),
                                          ("--temperature", "warm")])
def test_bad_k_or_temperature_is_a_usage_error(option, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--checkpoint", "no_such_dir", "--dataset", "fashion_mnist", option, value])
    assert exit_info.value.code == 2 and f"argument {option}" in capsys.readouterr().err
