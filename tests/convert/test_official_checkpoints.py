"""Official checkpoint files -> convert (Python API and CLI) -> same outputs as the official
PyTorch forward, on real photos; plus every way a file can be wrong."""

import argparse
import json

import numpy as np
import pytest
import torch
from official_files import dino_cnn, dino_vit, dino_vit_official_cls, supervised
from PIL import Image
from skimage import data

from simpool_jax import convert
from simpool_jax.convert.__main__ import main as convert_main
from simpool_jax.features import main as features_main

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def photos(size: int) -> torch.Tensor:
    """Three real photos (skimage.data), resized bicubic and ImageNet-normalised, NCHW."""
    out = []
    for name in ("astronaut", "chelsea", "coffee"):
        image = Image.fromarray(getattr(data, name)()).resize((size, size), Image.BICUBIC)
        out.append((np.asarray(image) / 255.0 - MEAN) / STD)
    return torch.from_numpy(np.stack(out).transpose(0, 3, 1, 2).astype(np.float32))


def check(model, variables, reference, size, atol=1e-4):
    """Outputs within `atol` of the official forward (attention within 2e-5). Features also get
    rtol 1e-5, as the CNN token grids of test_timm_parity: ResNet-50 features reach ~10 here and
    are sums over thousands of fp32 conv terms, so both fp32 forwards sit ~2e-5 from a float64
    one, and a CPU whose kernels sum in another order can add a few 1e-5 more."""
    images = photos(size)
    ours = model.apply(variables, images.permute(0, 2, 3, 1).numpy())
    expected = reference(images)
    for name, value in expected.items():
        tolerance = 2e-5 if name == "attention" else atol
        print(f"\n  {size}px {name:<10} max|diff| {np.abs(np.asarray(ours[name]) - value.numpy()).max():.2e}",
              end="")
        np.testing.assert_allclose(np.asarray(ours[name]), value.numpy(), atol=tolerance,
                                   rtol=1e-5 if name == "features" else 0, err_msg=name)


def save(tmp_path, obj, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["teacher", "student"])
def test_dino_vit_small_simpool_gamma(tmp_path, entry):
    official = dino_vit("vit_small", gamma=1.25)
    path = save(tmp_path, official.obj)
    model, variables, record = convert.load_torch_checkpoint(path, key=None if entry == "teacher" else entry)
    assert record["source"]["key"] == entry
    assert record["model"]["pooling_kwargs"] == {"gamma": 1.25, "use_beta": True}
    for size in (224, 96):
        check(model, variables, official.reference[entry], size)


@pytest.mark.slow
def test_dino_vit_small_no_gamma_ignores_stray_beta(tmp_path):
    official = dino_vit("vit_small", gamma=None, stray_beta=True)
    with pytest.warns(UserWarning, match="stray simpool.beta"):
        model, variables, record = convert.load_torch_checkpoint(save(tmp_path, official.obj))
    assert record["model"]["pooling_kwargs"] == {"gamma": None, "use_beta": False}
    for size in (224, 96):
        check(model, variables, official.reference["teacher"], size)


@pytest.mark.slow
def test_dino_vit_small_official_cls(tmp_path):
    official = dino_vit_official_cls("vit_small")
    model, variables, record = convert.load_torch_checkpoint(save(tmp_path, official.obj))
    assert record["model"]["pooling"] == "cls" and record["model"]["recipe"] == "dino"
    for size in (224, 96):
        check(model, variables, official.reference["teacher"], size)


@pytest.mark.slow
def test_dino_resnet50_simpool_with_bn_head_and_legacy_names(tmp_path):
    official = dino_cnn("resnet50", args_gamma=2.0, legacy_names=True)
    model, variables, record = convert.load_torch_checkpoint(save(tmp_path, official.obj))
    assert record["model"]["head_kwargs"]["use_bn"] is True
    assert any("renamed pre-release" in n for n in record["source"]["notes"])
    check(model, variables, official.reference["teacher"], 224)


@pytest.mark.slow
def test_dino_convnext_small_no_gamma_is_really_gamma_2(tmp_path):
    official = dino_cnn("convnext_small", args_gamma=None, legacy_names=True)
    with pytest.warns(UserWarning, match="timm, which drops gamma=None"):
        model, variables, record = convert.load_torch_checkpoint(save(tmp_path, official.obj))
    assert record["model"]["pooling_kwargs"]["gamma"] == 2.0
    check(model, variables, official.reference["teacher"], 224)
    literal, _, _ = convert.load_torch_checkpoint(save(tmp_path, official.obj), gamma=None)
    assert literal.pooling_kwargs["gamma"] is None


@pytest.mark.slow
@pytest.mark.parametrize("entry", ["state_dict_ema", "state_dict"])
def test_supervised_vit_small_simpool_ema_by_default(tmp_path, entry):
    official = supervised("vit_small_patch16_224", gamma=1.25, ema=True)
    path = save(tmp_path, official.obj, "vits.pth.tar")
    model, variables, record = convert.load_torch_checkpoint(
        path, key=None if entry == "state_dict_ema" else entry)
    assert record["source"]["key"] == entry and record["model"]["recipe"] == "supervised"
    check(model, variables, official.reference[entry], 224)


@pytest.mark.slow
def test_supervised_resnet50_split_bn(tmp_path):
    official = supervised("resnet50", gamma=2.0, ema=False, split_bn=True)
    model, variables, record = convert.load_torch_checkpoint(save(tmp_path, official.obj))
    assert any("aux_bn" in n for n in record["source"]["notes"])
    check(model, variables, official.reference["state_dict"], 224)


def test_bare_state_dict_without_args_uses_default_gamma_loudly(tmp_path):
    official = supervised("resnet18", gamma=2.0, ema=False, container="bare")
    with pytest.warns(UserWarning, match="official default gamma=2.0"):
        model, variables, _ = convert.load_torch_checkpoint(save(tmp_path, official.obj))
    check(model, variables, official.reference[None], 96)


def test_cli_convert_then_features_round_trip(tmp_path, capsys):
    official = dino_vit("vit_tiny", gamma=1.25)
    src = save(tmp_path, official.obj)
    assert convert_main([str(src), "--out", str(tmp_path / "model")]) == 0
    record = json.loads((tmp_path / "model" / "model.json").read_text())
    assert record["model"]["backbone"] == "vit_tiny" and record["source"]["key"] == "teacher"
    images = photos(96)
    np.save(tmp_path / "x.npy", images.numpy())  # NCHW, as PyTorch users have them
    for checkpoint in (tmp_path / "model", src):
        out = tmp_path / "y.npz"
        assert features_main(["--checkpoint", str(checkpoint), "--images", str(tmp_path / "x.npy"),
                              "--out", str(out)]) == 0
        result = np.load(out)
        expected = official.reference["teacher"](images)
        np.testing.assert_allclose(result["features"], expected["features"].numpy(), atol=1e-4)
        np.testing.assert_allclose(result["attention"], expected["attention"].numpy(), atol=2e-5)
        np.testing.assert_allclose(result["logits"], expected["logits"].numpy(), atol=1e-4)
    # Batches of 1 change the gamma-path minimum (taken per batch, as officially): not identical.
    features_main(["--checkpoint", str(src), "--images", str(tmp_path / "x.npy"),
                   "--out", str(tmp_path / "y1.npz"), "--batch-size", "1"])
    assert np.abs(np.load(tmp_path / "y1.npz")["features"] - result["features"]).max() > 1e-4


def test_mismatched_checkpoint_is_refused_and_nothing_written(tmp_path, capsys):
    official = supervised("resnet18", gamma=2.0, ema=False)
    state = official.obj["state_dict"]
    del state["layer2.1.conv1.weight"]
    state["fc.weight"] = torch.zeros(5, 100)
    out = tmp_path / "model"
    assert convert_main([str(save(tmp_path, official.obj)), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "missing in checkpoint (1): layer2.1.conv1.weight" in err
    assert "fc.weight: checkpoint (100, 5) -> model (512, 5)" in err
    assert "nothing written" in err and not out.exists()
    assert not list(tmp_path.glob(".model*"))


def test_allow_missing_drops_a_classifier(tmp_path):
    official = supervised("resnet18", gamma=2.0, ema=False)
    path = save(tmp_path, official.obj)
    model, variables, _ = convert.load_torch_checkpoint(path, allow_missing=r"^fc\.")
    assert model.head == "none" and "head" not in variables["params"]
    images = photos(96)
    np.testing.assert_allclose(
        np.asarray(model.apply(variables, images.permute(0, 2, 3, 1).numpy())["features"]),
        official.reference["state_dict"](images)["features"].numpy(), atol=1e-4)


def test_truncated_and_foreign_files_are_clear_errors(tmp_path, capsys):
    path = save(tmp_path, supervised("resnet18", gamma=2.0, ema=False).obj)
    data_bytes = path.read_bytes()
    path.write_bytes(data_bytes[: len(data_bytes) // 2])
    assert convert_main([str(path), "--out", str(tmp_path / "m")]) == 1
    assert "cannot read" in capsys.readouterr().err and not (tmp_path / "m").exists()
    (tmp_path / "notes.pth").write_text("not a checkpoint\n")
    with pytest.raises(convert.CheckpointFormatError, match="cannot read .*notes.pth"):
        convert.load_torch_checkpoint(tmp_path / "notes.pth")  # not "needs globals, --trust"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        convert.load_torch_checkpoint(tmp_path / "nope.pth")
    torch.save({"optimizer": {}, "epoch": 3}, tmp_path / "opt.pth")
    with pytest.raises(convert.CheckpointFormatError, match="unknown checkpoint layout"):
        convert.load_torch_checkpoint(tmp_path / "opt.pth")
    official = dino_vit("vit_tiny", gamma=1.25)
    with pytest.raises(convert.CheckpointFormatError, match="available: .*'student', 'teacher'"):
        convert.load_torch_checkpoint(save(tmp_path, official.obj), key="ema")


class Foreign:
    """A global that a weights-only load refuses."""


def test_files_needing_foreign_globals_are_refused_unless_trusted(tmp_path, capsys):
    official = supervised("resnet18", gamma=2.0, ema=False)
    official.obj["extra"] = Foreign()
    path = save(tmp_path, official.obj)
    assert convert_main([str(path), "--out", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert "Foreign" in err and "--trust-checkpoint" in err
    assert convert_main([str(path), "--out", str(tmp_path / "m"), "--trust-checkpoint"]) == 0
    assert isinstance(official.obj["args"], argparse.Namespace)  # Namespace alone is allowed


def test_existing_output_is_not_overwritten(tmp_path, capsys):
    path = save(tmp_path, supervised("resnet18", gamma=2.0, ema=False).obj)
    (tmp_path / "m").mkdir()
    assert convert_main([str(path), "--out", str(tmp_path / "m")]) == 1
    assert "exists" in capsys.readouterr().err
    assert convert_main([str(path), "--out", str(tmp_path / "m"), "--overwrite"]) == 0
