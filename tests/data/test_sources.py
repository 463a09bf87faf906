"""Sources: the Fashion-MNIST TFDS build against the raw IDX bytes, image folders (bad files
included), sharding, and the errors for wrong names, splits and missing ImageNet."""

import os

import numpy as np
import pytest
from PIL import Image

from conftest import LIMIT, idx_array, needs_fmnist
from helpers import photo
from simpool_jax.data import get_dataset, get_pp
from simpool_jax.data.sources import even_bounds


@needs_fmnist
def test_fashion_mnist_build_equals_idx_files(fmnist_dir):
    images, labels = idx_array("t10k-images-idx3-ubyte.gz"), idx_array("t10k-labels-idx1-ubyte.gz")
    source = get_dataset("fashion_mnist", "test", fmnist_dir, process_index=0, process_count=1, limit=LIMIT)
    assert (source.num_examples, source.num_classes) == (LIMIT, 10)
    decode = get_pp("decode(channels=1)")
    got = {}
    for d in source.get_tfdata().map(source.load).map(decode).as_numpy_iterator():
        got.setdefault(d["image"].tobytes(), []).append(int(d["label"]))
    want = {}
    for img, lab in zip(images[:LIMIT], labels[:LIMIT]):
        want.setdefault(img[..., None].tobytes(), []).append(int(lab))
    assert {k: sorted(v) for k, v in got.items()} == {k: sorted(v) for k, v in want.items()}


@needs_fmnist
def test_shards_are_disjoint_and_complete(fmnist_dir):
    seen = []
    for i in range(3):
        s = get_dataset("fashion_mnist", "train", fmnist_dir, process_index=i, process_count=3, limit=LIMIT)
        assert s.num_examples == LIMIT and s.num_examples_per_process == s.process_sizes[i]
        seen += [d["image"] for d in s.get_tfdata().as_numpy_iterator()]
    distinct = {img.tobytes() for img in idx_array("train-images-idx3-ubyte.gz")[:LIMIT]}
    assert len(seen) == LIMIT and len(set(seen)) == len(distinct)  # every example once, in one shard


def test_even_bounds_like_tfds():
    assert [even_bounds(11, 3, i) for i in range(3)] == [(0, 4), (4, 8), (8, 11)]
    with pytest.raises(ValueError, match="process index"):
        even_bounds(10, 2, 2)


def write_folder(root, per_class=5, corrupt=1):
    """root/{train,val}/{cat,dog}/*.jpg|png from real photo crops, plus `corrupt` bad files in train."""
    rng = np.random.RandomState(0)
    big = photo(256, 256)
    for split in ("train", "val"):
        for c in ("cat", "dog"):
            os.makedirs(root / split / c)
            for i in range(per_class):
                y, x = rng.randint(0, 200, 2)
                Image.fromarray(big[y:y + 40, x:x + 50]).save(root / split / c / f"{i}.{'jpg' if i % 2 else 'png'}")
    for i in range(corrupt):
        (root / "train" / "dog" / f"bad{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")


def test_folder_source_splits_classes_and_errors(tmp_path):
    write_folder(tmp_path)
    s = get_dataset(f"folder:{tmp_path}", "val", process_index=0, process_count=1)
    assert (s.num_examples, s.num_classes) == (10, 2)
    labels = sorted(int(d["label"]) for d in s.get_tfdata().as_numpy_iterator())
    assert labels == [0] * 5 + [1] * 5
    with pytest.raises(ValueError, match=r"no split 'test'.*\['train', 'val'\]"):
        get_dataset(f"folder:{tmp_path}", "test", process_index=0, process_count=1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        get_dataset(f"folder:{tmp_path}/nope", "train", process_index=0, process_count=1)


def test_unknown_dataset_and_split(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'fashion_mnits'.*fashion_mnist.*folder:"):
        get_dataset("fashion_mnits", "train", str(tmp_path), process_index=0, process_count=1)


@needs_fmnist
def test_unknown_split_lists_splits(fmnist_dir):
    with pytest.raises(ValueError, match=r"no split 'validation'.*\['test', 'train'\]"):
        get_dataset("fashion_mnist", "validation", fmnist_dir, process_index=0, process_count=1, limit=LIMIT)


def test_missing_imagenet_names_the_steps(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        get_dataset("imagenet2012", "train", str(tmp_path), process_index=0, process_count=1)
    msg = str(e.value)
    for needed in ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar", str(tmp_path / "downloads" / "manual"),
                   "python -m simpool_jax.data.prepare imagenet2012"):
        assert needed in msg
