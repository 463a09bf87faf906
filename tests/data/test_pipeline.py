"""Host pipelines and global batches: eval padding covers every example once across 2 simulated
processes, arrays land sharded on the data axis with no implicit transfer, training is seeded,
and corrupt folder images are skipped and counted."""

import logging

import jax
import numpy as np
import pytest

from conftest import LIMIT, idx_array, needs_fmnist
from simpool_jax.data import make_eval_iterator, make_train_iterator
from test_sources import write_folder


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((8,), ("data",))


@needs_fmnist
def test_eval_covers_each_example_once_across_two_processes(fmnist_dir, mesh):
    config = dict(name="fashion_mnist", split="test", data_dir=fmnist_dir, limit=LIMIT, batch_size=16,
                  pp="decode|central_crop(28)")
    got, steps, padded = [], [], 0
    for index in range(2):
        it = make_eval_iterator(config, mesh, process_index=index, process_count=2)
        batches = list(it)
        steps.append((len(batches), it.steps))
        for b in batches:
            mask = np.asarray(b["mask"])
            assert b["image"].shape == (8, 28, 28, 3) and mask.dtype == bool
            imgs = np.round(np.asarray(b["image"])[mask, ..., 0] * 255).astype(np.uint8)
            got += [(i.tobytes(), int(l)) for i, l in zip(imgs, np.asarray(b["label"])[mask])]
            # A short batch is filled with copies of its own real examples (SimPool's batch
            # minimum stays theirs); a host past its shard's end would send zeros.
            image = np.asarray(b["image"])
            real = {x.tobytes() for x in image[mask]}
            assert all(x.tobytes() in real for x in image[~mask]) if real else not image.any()
            padded += int((~mask).sum())
        assert it.skipped == 0
    assert steps == [(19, 19), (19, 19)]  # 150 examples per process, 8 per host batch: same step count
    assert padded == 2 * 2  # each host's last batch: 6 real + 2 copies
    images, labels = idx_array("t10k-images-idx3-ubyte.gz")[:LIMIT], idx_array("t10k-labels-idx1-ubyte.gz")[:LIMIT]
    assert sorted(got) == sorted((i.tobytes(), int(l)) for i, l in zip(images, labels))


@needs_fmnist
def test_train_batches_are_global_sharded_seeded_and_repeat(fmnist_dir, mesh):
    config = dict(name="fashion_mnist", split="train", data_dir=fmnist_dir, limit=LIMIT, batch_size=64,
                  pp="decode|rrc(16, scale=(0.3, 1))|flip_lr|normalize('half')|onehot(10)", seed=3)
    it = make_train_iterator(config, mesh)
    with jax.transfer_guard("disallow"):
        batches = [next(it) for _ in range(7)]  # 7 x 64 > 300: crosses an epoch
    b = batches[0]
    assert set(b) == {"image", "label", "labels"}
    for k, v in b.items():
        assert isinstance(v, jax.Array) and v.sharding.spec == jax.P("data") and len(v.addressable_shards) == 8
    assert b["image"].shape == (64, 16, 16, 3) and b["image"].dtype == np.float32 and b["label"].dtype == np.int32
    np.testing.assert_array_equal(np.asarray(b["labels"]).argmax(-1), np.asarray(b["label"]))
    again = next(make_train_iterator(config, mesh))
    np.testing.assert_array_equal(np.asarray(again["image"]), np.asarray(b["image"]))
    resumed = make_train_iterator({**config, "start_step": 5}, mesh)
    for want in batches[5:]:
        got = next(resumed)
        np.testing.assert_array_equal(np.asarray(got["image"]), np.asarray(want["image"]))
    other = next(make_train_iterator({**config, "seed": 4}, mesh))
    assert not np.array_equal(np.asarray(other["label"]), np.asarray(b["label"]))


def test_bad_config_keys_and_batch_sizes(mesh, tmp_path):
    with pytest.raises(ValueError, match="unknown input config keys \\['bacth_size'\\]"):
        make_train_iterator(dict(name="x", split="train", pp="decode", bacth_size=8), mesh)
    write_folder(tmp_path, corrupt=0)
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        make_train_iterator(dict(name=f"folder:{tmp_path}", split="train", pp="decode|resize(8)", batch_size=12), mesh)


def test_corrupt_folder_images_are_skipped_and_counted(tmp_path, mesh, caplog):
    write_folder(tmp_path, per_class=5, corrupt=1)  # train: 10 good images + 1 corrupt
    config = dict(name=f"folder:{tmp_path}", split="train", pp="decode|resize(8)", batch_size=8)
    it = make_train_iterator(config, mesh)
    with caplog.at_level(logging.WARNING):
        for _ in range(5):  # 40 examples: several epochs of 11 files
            next(it)
    assert 3 <= it.skipped <= 4 and it.seen == 40
    assert any("skipped" in r.getMessage() and "corrupt" in r.getMessage() for r in caplog.records)
    valid, skipped = 0, 0
    for index in range(2):
        ev = make_eval_iterator({**config, "batch_size": 16}, mesh, process_index=index, process_count=2)
        valid += sum(int(np.asarray(b["mask"]).sum()) for b in ev)
        skipped += ev.skipped
    assert (valid, skipped) == (10, 1)
