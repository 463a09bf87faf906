"""python -m simpool_jax.attention on tiny saved model directories: one overlay PNG per image at
the requested pixel size, normalisation and size read from the checkpoint's record, clean errors,
and the Fashion-MNIST foreground-IoU mode."""

import json

import jax
import numpy as np
import pytest
from PIL import Image
from repo_configs import get_config

from simpool_jax import attention
from simpool_jax.checkpoint import save_model_dir
from simpool_jax.model import build_model
from markers import needs_fashion_mnist

FMNIST_NORMALIZE = "normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))"


def model_dir(path, pooling: str, train_config: dict | None = None):
    """A 1-block ViT (width 16, 4 px patches, 7 x 7 position grid) saved as a model directory."""
    config = dict(backbone="vit_tiny", pooling=pooling, recipe="dino",
                  backbone_kwargs=dict(width=16, depth=1, num_heads=2, patch_size=4,
                                       posemb_grid=[7, 7]),
                  pooling_kwargs=dict(gamma=1.25) if pooling == "simpool" else {})
    zeros = np.zeros((1, 28, 28, 3), np.float32)
    variables = build_model(config).init(jax.random.PRNGKey(0), zeros)
    source = {"train_config": train_config} if train_config else {}
    return save_model_dir(path, config, variables, source)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("attention_cli")
    fmnist_pp = f"decode(3)|resize(28)|{FMNIST_NORMALIZE}"
    fmnist_run = {"image_size": 28, "knn": {"test": {"pp": fmnist_pp}}}
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (30, 40), np.uint8)).save(images / "gray.png")
    Image.fromarray(rng.integers(0, 256, (50, 20, 3), np.uint8)).save(images / "colour.jpg")
    (images / "broken.png").write_bytes(b"not an image")
    return {"simpool": model_dir(root / "simpool", "simpool"),
            "cls": model_dir(root / "cls", "cls", fmnist_run), "images": images}


def test_one_png_per_image_at_the_requested_size(dirs, tmp_path, capsys):
    images = [str(dirs["images"] / "gray.png"), str(dirs["images"] / "colour.jpg")]
    assert attention.main(["--checkpoint", str(dirs["simpool"]), "--images", *images,
                           "--out", str(tmp_path), "--size", "56"]) == 0
    captured = capsys.readouterr()
    assert "ImageNet mean / std" in captured.err  # nothing recorded in this model directory
    assert "14x14 tokens, 56 px" in captured.out  # 56 px / 4 px patches, position grid resampled
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["colour_pooler.png", "gray_pooler.png"]
    for name in written:
        png = Image.open(tmp_path / name)
        assert png.size == (56, 56) and png.mode == "RGB"


def test_cls_model_uses_its_records_size_and_cls_attention(dirs, tmp_path, capsys):
    assert attention.main(["--checkpoint", str(dirs["cls"]), "--images",
                           str(dirs["images"] / "gray.png"), "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "note:" not in captured.err
    assert Image.open(tmp_path / "gray_cls.png").size == (28, 28)  # the run's image_size


def test_recorded_preprocessing_of_a_fashion_mnist_run():
    record = {"source": {"train_config": json.loads(get_config("fmnist_dino").to_json())}}
    mean, std, size, note = attention.recorded_preprocessing(record)
    assert (mean, std, size, note) == ((0.5,) * 3, (0.5,) * 3, 28, None)
    mean, std, size, note = attention.recorded_preprocessing({"source": {}})
    assert (mean, std, size) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), None) and note


@pytest.mark.parametrize("case, message", [
    ("broken", "cannot read image"), ("missing_image", "cannot read image"),
    ("missing_checkpoint", "does not exist"), ("size", "not a multiple of the ViT's patch size 4")])
def test_errors_are_clean_and_write_nothing(dirs, tmp_path, capsys, case, message):
    checkpoint = str(dirs["simpool"]) if case != "missing_checkpoint" else str(tmp_path / "nope")
    image = {"broken": "broken.png", "missing_image": "absent.png"}.get(case, "gray.png")
    out = tmp_path / "out"
    argv = ["--checkpoint", checkpoint, "--images", str(dirs["images"] / "gray.png"),
            str(dirs["images"] / image), "--out", str(out),
            "--size", "30" if case == "size" else "28"]
    assert attention.main(argv) == 1
    assert message in capsys.readouterr().err
    assert not out.exists()


@needs_fashion_mnist
def test_fashion_mnist_mode_writes_the_iou_and_a_figure(dirs, tmp_path, capsys):
    assert attention.main(["--checkpoint", str(dirs["cls"]), "--dataset", "fashion_mnist",
                           "--limit", "128", "--batch-size", "64", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "fashion_mnist_iou.json").read_text())
    assert report["n"] == 128 and report["source"] == "cls" and report["mass"] == 0.6
    assert 0.0 < report["mean_iou"] < 1.0 and FMNIST_NORMALIZE in report["pp"]
    assert f"mean foreground IoU {report['mean_iou']:.4f} over 128" in capsys.readouterr().out
    assert Image.open(tmp_path / "fashion_mnist_attention.png").size == (1280, 340)  # 8 columns
