"""Foreground IoU of attention maps: hand-computed thresholds and IoUs, DINO's threshold rule,
the three map sources against numpy recomputations from the parameters, Fashion-MNIST plumbing."""

import json
import math

import jax
import numpy as np
import pytest

from reference import np_layer_norm, np_simpool
from repo_configs import get_config
from simpool_jax.evaluate.foreground import (
    attention_maps,
    fashion_mnist_iou,
    foreground_iou,
    mass_threshold,
)
from simpool_jax.model import build_model
from markers import FASHION_MNIST_DIR, needs_fashion_mnist



def test_mass_threshold_hand_cases():
    # Sorted: 0.4 (token 1), 0.3 (token 3): 0.4 < 0.6, then 0.7 >= 0.6 -> two tokens kept.
    np.testing.assert_array_equal(mass_threshold(np.array([[0.1, 0.4, 0.2, 0.3]])),
                                  [[False, True, False, True]])
    # Rows that do not sum to 1 are normalised: the same map x 10, and a second row.
    np.testing.assert_array_equal(
        mass_threshold(np.array([[1.0, 4.0, 2.0, 3.0], [0.0, 0.0, 5.0, 0.0]])),
        [[False, True, False, True], [False, False, True, False]])
    # Exactly reaching the mass stops: 0.5 of 0.5 is enough.
    np.testing.assert_array_equal(mass_threshold(np.array([[0.5, 0.25, 0.25]]), 0.5),
                                  [[True, False, False]])
    # mass 1 keeps every token carrying mass, never the zeros; an all-zero row keeps nothing.
    np.testing.assert_array_equal(mass_threshold(np.array([[0.5, 0.0, 0.5], [0.0, 0.0, 0.0]]), 1.0),
                                  [[True, False, True], [False, False, False]])


def test_mass_threshold_ties_go_to_the_lower_token_index():
    np.testing.assert_array_equal(mass_threshold(np.full((1, 4), 0.25), 0.5),
                                  [[True, True, False, False]])
    np.testing.assert_array_equal(mass_threshold(np.array([[1.0, 3.0, 1.0, 3.0]]), 0.6),
                                  [[False, True, False, True]])


def test_mass_threshold_is_dinos_rule():
    """DINO's visualize_attention: ascending sort, normalise, cumsum > 1 - threshold."""
    rng = np.random.default_rng(0)
    a = rng.random((20, 49)) ** 3
    for mass in (0.3, 0.6, 0.9):
        idx = np.argsort(a, axis=1)
        val = np.take_along_axis(a, idx, axis=1)
        val = val / val.sum(axis=1, keepdims=True)
        th = np.cumsum(val, axis=1) > 1 - mass
        expected = np.take_along_axis(th, np.argsort(idx, axis=1), axis=1)
        np.testing.assert_array_equal(mass_threshold(a, mass), expected)


@pytest.mark.parametrize("bad, match", [(np.array([[0.5, -0.1]]), "non-negative"),
                                        (np.array([0.5, 0.5]), r"\(n, N\)")])
def test_mass_threshold_rejects_bad_maps(bad, match):
    with pytest.raises(ValueError, match=match):
        mass_threshold(bad)
    with pytest.raises(ValueError, match="mass"):
        mass_threshold(np.ones((1, 2)), 0.0)


def test_foreground_iou_hand_cases():
    a = np.array([[0.7, 0.1, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0]])
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, :] = True  # top row; the kept token 0 is the top-left 2 x 2 block
    np.testing.assert_allclose(foreground_iou(a, (2, 2), masks), [2 / 6, 1.0])
    # 3 x 3 pixels from a 2 x 2 grid: rows / columns 0, 1 take token row / column 0 (i * 2 // 3).
    full = np.ones((1, 3, 3), bool)
    np.testing.assert_allclose(foreground_iou(a[:1], (2, 2), full), [4 / 9])
    # Non-square grid (1, 2): the right half kept, mask = one right-half pixel of 2 x 4.
    mask = np.zeros((1, 2, 4), bool)
    mask[0, 1, 3] = True
    np.testing.assert_allclose(foreground_iou(np.array([[0.1, 0.9]]), (1, 2), mask), [1 / 4])
    with pytest.raises(ValueError, match="grid"):
        foreground_iou(a, (3, 3), masks)


def perturbed(variables, seed: int = 0, scale: float = 0.3):
    """Parameters far from init (peaked attention), so the comparisons are not all-uniform maps."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda x: np.asarray(x) + scale * rng.standard_normal(x.shape).astype(x.dtype), variables)


def tiny_vit(pooling: str, size=(8, 12), **pooling_kwargs):
    """A 2-block ViT (width 16, 2 heads, 4 px patches) on a (2, 3) token grid."""
    grid = (size[0] // 4, size[1] // 4)
    model = build_model(dict(backbone="vit_tiny", pooling=pooling, recipe="dino",
                             pooling_kwargs=pooling_kwargs,
                             backbone_kwargs=dict(width=16, depth=2, num_heads=2, patch_size=4,
                                                  posemb_grid=grid, posemb_resample="none")))
    images = np.random.default_rng(1).standard_normal((3, *size, 3)).astype(np.float32)
    variables = perturbed(model.init(jax.random.PRNGKey(0), images))
    return model, variables, images


def np_vit_last_cls_attention(p: dict, images: np.ndarray, heads: int, patch: int) -> np.ndarray:
    """Mean-over-heads CLS -> patch softmax(q k^T / sqrt(dh)) of the last block, in float64."""
    b, hh, ww, c = images.shape
    x = images.astype(np.float64).reshape(b, hh // patch, patch, ww // patch, patch, c)
    x = x.transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, patch * patch * c)
    kernel = np.asarray(p["patch_embed"]["kernel"], np.float64)  # (p, p, c, D), as the patch rows
    x = x @ kernel.reshape(-1, kernel.shape[-1]) + p["patch_embed"]["bias"]
    pos = np.asarray(p["pos_embed"], np.float64)
    cls = np.broadcast_to(p["cls_token"] + pos[:, :1], (b, 1, x.shape[-1]))
    x = np.concatenate([cls, x + pos[:, 1:]], axis=1)
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
    blocks = sorted((k for k in p if k.startswith("blocks_")), key=lambda k: int(k[7:]))
    d = x.shape[-1]
    dh = d // heads
    for name in blocks:
        blk = p[name]
        y = np_layer_norm(x, blk["norm1"]["scale"], blk["norm1"]["bias"])
        qkv = y @ blk["attn"]["qkv"]["kernel"] + blk["attn"]["qkv"]["bias"]
        qkv = qkv.reshape(b, -1, 3, heads, dh)
        q, kk, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        logits = np.einsum("bqhc,bkhc->bhqk", q, kk) / math.sqrt(dh)
        attn = np.exp(logits - logits.max(-1, keepdims=True))
        attn /= attn.sum(-1, keepdims=True)
        if name == blocks[-1]:
            return attn[:, :, 0, 1:].mean(axis=1)
        out = np.einsum("bhqk,bkhc->bqhc", attn, v).reshape(b, -1, d)
        x = x + out @ blk["attn"]["proj"]["kernel"] + blk["attn"]["proj"]["bias"]
        y = np_layer_norm(x, blk["norm2"]["scale"], blk["norm2"]["bias"])
        y = gelu(y @ blk["mlp"]["fc1"]["kernel"] + blk["mlp"]["fc1"]["bias"])
        x = x + y @ blk["mlp"]["fc2"]["kernel"] + blk["mlp"]["fc2"]["bias"]


def test_cls_source_is_the_last_blocks_mean_cls_attention():
    model, variables, images = tiny_vit("cls")
    maps, grid, source = attention_maps(model, variables, images)
    assert source == "cls" and grid == (2, 3) and maps.shape == (3, 6)
    expected = np_vit_last_cls_attention(variables["params"]["backbone"], images, heads=2, patch=4)
    np.testing.assert_allclose(maps, expected, atol=1e-5)
    assert maps.std() > 1e-2  # the maps are not uniform: the comparison means something


def test_pooler_source_is_simpools_attention():
    model, variables, images = tiny_vit("simpool", gamma=1.25)
    maps, grid, source = attention_maps(model, variables, images)
    assert source == "pooler" and grid == (2, 3)
    tokens = np.asarray(model.apply(variables, images)["tokens"])
    pool = variables["params"]["pool"]
    _, expected = np_simpool(tokens, pool["norm_patches"]["scale"], pool["norm_patches"]["bias"],
                             np.asarray(pool["wq"]["kernel"]).T, np.asarray(pool["wk"]["kernel"]).T)
    np.testing.assert_allclose(maps, expected, atol=1e-5)


def test_token_norm_source_and_unavailable_sources():
    model, variables, images = tiny_vit("gap")
    maps, grid, source = attention_maps(model, variables, images)
    assert source == "token_norm" and grid == (2, 3)
    tokens = np.asarray(model.apply(variables, images)["tokens"], np.float64)
    np.testing.assert_allclose(maps, np.sqrt((tokens**2).sum(-1)), rtol=1e-5)
    with pytest.raises(ValueError, match="returns no attention"):
        attention_maps(model, variables, images, "pooler")
    with pytest.raises(ValueError, match="class token"):
        attention_maps(model, variables, images, "cls")
    with pytest.raises(ValueError, match="not in"):
        attention_maps(model, variables, images, "saliency")


def test_default_pp_is_the_dino_configs_knn_test_pp():
    import inspect

    default = inspect.signature(fashion_mnist_iou).parameters["pp"].default
    assert default == get_config("fmnist_dino").knn.test.pp


def reference_iou(attention: np.ndarray, mask: np.ndarray, grid: tuple, mass: float) -> float:
    """One image, written out directly: descending order, keep while the mass above < mass."""
    share = attention / attention.sum()
    kept, above = np.zeros(len(share), bool), 0.0
    for i in sorted(range(len(share)), key=lambda i: (-share[i], i)):
        if above >= mass:
            break
        kept[i], above = True, above + share[i]
    block = mask.shape[0] // grid[0], mask.shape[1] // grid[1]
    pixels = np.kron(kept.reshape(grid), np.ones(block)).astype(bool)
    return (pixels & mask).sum() / (pixels | mask).sum()


@needs_fashion_mnist
def test_fashion_mnist_iou_counts_each_test_image_once():
    """128 test images in batches of 48 (the last one padded) against the IDX files read here."""
    import gzip

    model = build_model(dict(backbone="vit_tiny", pooling="simpool", recipe="dino",
                             pooling_kwargs=dict(gamma=1.25),
                             backbone_kwargs=dict(width=16, depth=1, num_heads=2, patch_size=4,
                                                  posemb_grid=(7, 7))))
    variables = perturbed(model.init(jax.random.PRNGKey(0), np.zeros((1, 28, 28, 3), np.float32)))
    result = fashion_mnist_iou(model, variables, limit=128, batch_size=48, mass=0.6)
    with gzip.open(FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
        raw = np.frombuffer(f.read()[16:], np.uint8).reshape(-1, 28, 28)[:128]
    images = np.repeat(((raw / 255.0 - 0.5) / 0.5)[..., None], 3, -1).astype(np.float32)
    maps, grid, _ = attention_maps(model, variables, images)
    expected = np.mean([reference_iou(a, m, grid, 0.6) for a, m in zip(maps, raw > 0)])
    assert result["n"] == 128 and result["source"] == "pooler" and result["mass"] == 0.6
    assert result["mean_iou"] == pytest.approx(expected, abs=2e-3)
    assert 0.05 < result["mean_iou"] < 0.95


@needs_fashion_mnist
def test_dino_knn_evaluation_adds_the_iou_to_knn_json(tmp_path):
    from simpool_jax.parallel import make_mesh
    from simpool_jax.train.dino_trainer import knn_evaluation, teacher_config

    config = get_config("fmnist_dino")
    config.model.backbone_kwargs.update(width=16, depth=1, num_heads=2)
    config.model.head_kwargs.update(out_dim=32, hidden_dim=32, bottleneck_dim=16)
    for split in (config.knn.train, config.knn.test):
        split.update(limit=128, batch_size=64)
    model = build_model(teacher_config(config))
    variables = model.init(jax.random.PRNGKey(0), np.zeros((2, 28, 28, 3), np.float32))
    state = {"teacher_params": variables["params"], "teacher_batch_stats": {}, "step": np.int32(3)}
    metrics = knn_evaluation(config, make_mesh((("data", -1),)), model, tmp_path)(state)
    report = json.loads((tmp_path / "knn.json").read_text())
    assert report["test_examples"] == 128 and report["attention_source"] == "pooler"
    assert report["attention_mass"] == 0.6 and 0.0 < report["attention_iou"] < 1.0
    assert metrics["attention_iou"] == report["attention_iou"]
    assert (tmp_path / "attention.png").is_file()
