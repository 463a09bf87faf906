"""Data sources: TFDS datasets (ImageNet, Fashion-MNIST, any prepared builder) and image folders.

A source is one split of one dataset as seen by one process: `tfds.even_splits` semantics (contiguous
shards, the first `n % count` shards one example longer), so every example belongs to exactly one
process. Sources yield *encoded* images (`image`: bytes, `label`: int64); decoding is the first pp op,
after shuffling, so shuffle buffers hold small records. Nothing here downloads unless asked to.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from simpool_jax.data import fashion_mnist
from simpool_jax.data.registry import Example

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
IMAGENET_STEPS = """imagenet2012 is not prepared in {data_dir}. TFDS prepares it from the official tars:
  1. get ILSVRC2012_img_train.tar (138 GB) and ILSVRC2012_img_val.tar (6.3 GB) from
     https://image-net.org/download-images (registration needed);
  2. put both in {manual_dir};
  3. run: python -m simpool_jax.data.prepare imagenet2012 --data_dir {data_dir}
     (about 150 GB more disk for the TFRecords; the tars can be deleted afterwards)."""


def even_bounds(n: int, count: int, index: int) -> tuple[int, int]:
    """[start, end) of shard `index` of `count` over n examples, as `tfds.even_splits`."""
    if not 0 <= index < count:
        raise ValueError(f"process index {index} is not in [0, {count})")
    per, extra = divmod(n, count)
    start = per * index + min(index, extra)
    return start, start + per + (index < extra)


class Source:
    """One process's share of one split. `get_tfdata(seed)` yields raw records; `load` (applied after
    shuffling) turns them into `{"image": encoded bytes, "label": int64}`."""

    def __init__(self, name: str, split: str, num_classes: int, process_sizes: Sequence[int],
                 process_index: int, make: Callable[[int | None], tf.data.Dataset],
                 load: Callable[[Example], Example] = lambda d: d, may_be_corrupt: bool = False):
        self.name, self.split, self.num_classes = name, split, num_classes
        self.process_sizes, self.process_index = tuple(process_sizes), process_index
        self._make, self.load, self.may_be_corrupt = make, load, may_be_corrupt

    @property
    def num_examples(self) -> int:
        """Examples in the whole split (all processes)."""
        return sum(self.process_sizes)

    @property
    def num_examples_per_process(self) -> int:
        """Examples in this process's shard."""
        return self.process_sizes[self.process_index]

    def get_tfdata(self, shuffle_seed: int | None = None) -> tf.data.Dataset:
        """This process's records, in a seed-determined order (file order when the seed is None)."""
        return self._make(shuffle_seed)


def _tfds_source(builder: tfds.core.DatasetBuilder, split: str, index: int, count: int) -> Source:
    splits = builder.info.splits
    base = split.split("[")[0]
    if base not in splits:
        raise ValueError(f"{builder.name} has no split {split!r}; it has {sorted(splits)}")
    shards = tfds.even_splits(split, count)
    sizes = [splits[s].num_examples for s in shards]
    image_key, label_key = builder.info.supervised_keys or ("image", "label")

    def make(seed: int | None) -> tf.data.Dataset:
        ds = builder.as_dataset(split=shards[index], shuffle_files=seed is not None,
                                decoders={image_key: tfds.decode.SkipDecoding()},
                                read_config=tfds.ReadConfig(shuffle_seed=seed, skip_prefetch=True))
        return ds.map(lambda d: {"image": d[image_key], "label": d[label_key]})

    return Source(builder.name, split, builder.info.features[label_key].num_classes, sizes, index, make)


def _fashion_mnist_builder(data_dir: str | None, limit: int | None, download: bool) -> tfds.core.DatasetBuilder:
    directory = fashion_mnist.source_dir()
    if fashion_mnist.files_present(directory):
        builder = fashion_mnist.FashionMnistIdx(data_dir=data_dir, config=fashion_mnist.config(directory, limit))
        if not builder.is_prepared():
            builder.download_and_prepare()
        return builder
    if limit is not None:
        raise ValueError("fashion_mnist(limit=...) needs the local IDX files")
    builder = tfds.builder("fashion_mnist", data_dir=data_dir)
    if not builder.is_prepared():
        if not download:
            raise FileNotFoundError(
                f"Fashion-MNIST: no IDX files in {directory} and no prepared TFDS copy in {builder.data_dir}. "
                f"Install the Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), "
                f"set ${fashion_mnist.SOURCE_DIR_ENV} to a folder with the four IDX .gz files, or pass "
                f"download=True to let TFDS download it (needs the network).")
        builder.download_and_prepare()
    return builder


def _tfds_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(
            f"unknown dataset {name!r}: use 'fashion_mnist', 'imagenet2012', 'folder:<path>' or any "
            f"TFDS builder name (tfds.list_builders()) prepared under the data_dir") from None
    if not builder.is_prepared():
        if name.split(":")[0].split("/")[0] == "imagenet2012":
            raise FileNotFoundError(IMAGENET_STEPS.format(
                data_dir=builder.data_dir_root, manual_dir=os.path.join(builder.data_dir_root, "downloads", "manual")))
        raise FileNotFoundError(f"{name} is not prepared in {builder.data_dir_root}; prepare it once with "
                                f"python -m simpool_jax.data.prepare {name} --data_dir {builder.data_dir_root}")
    return builder


def _image_files(directory: str) -> list[str]:
    return sorted(f for f in os.listdir(directory) if f.lower().endswith(IMAGE_EXTENSIONS)
                  and os.path.isfile(os.path.join(directory, f)))


def _class_dirs(directory: str) -> list[str]:
    return sorted(d for d in os.listdir(directory)
                  if os.path.isdir(os.path.join(directory, d)) and _image_files(os.path.join(directory, d)))


def folder_splits(root: str) -> dict[str, str]:
    """`root/<split>/<class>/<image>` -> {split: path}; `root/<class>/<image>` -> {"train": root}."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist")
    if _class_dirs(root):
        return {"train": root}
    splits = {d: os.path.join(root, d) for d in sorted(os.listdir(root))
              if os.path.isdir(os.path.join(root, d)) and _class_dirs(os.path.join(root, d))}
    if not splits:
        raise ValueError(f"no images in {root!r}: expected {root}/<class>/<image> or {root}/<split>/<class>/<image> "
                         f"with extensions {IMAGE_EXTENSIONS}")
    return splits


def _folder_source(root: str, split: str, index: int, count: int) -> Source:
    splits = folder_splits(root)
    if split not in splits:
        raise ValueError(f"image folder {root!r} has no split {split!r}; it has {sorted(splits)}")
    classes = sorted({c for path in splits.values() for c in _class_dirs(path)})
    files = [(os.path.join(splits[split], c, f), label) for label, c in enumerate(classes)
             if os.path.isdir(os.path.join(splits[split], c)) for f in _image_files(os.path.join(splits[split], c))]
    # A fixed permutation before sharding, so every process sees every class.
    files = [files[i] for i in np.random.RandomState(0).permutation(len(files))]
    bounds = [even_bounds(len(files), count, i) for i in range(count)]
    paths, labels = zip(*files[slice(*bounds[index])]) if files else ((), ())

    def make(seed: int | None) -> tf.data.Dataset:
        ds = tf.data.Dataset.from_tensor_slices({"path": list(paths), "label": np.asarray(labels, np.int64)})
        return ds if seed is None else ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def load(d: Example) -> Example:
        return {**{k: v for k, v in d.items() if k != "path"}, "image": tf.io.read_file(d["path"])}

    return Source(f"folder:{root}", split, len(classes), [e - s for s, e in bounds], index, make, load,
                  may_be_corrupt=True)


def get_dataset(name: str, split: str, data_dir: str | None = None, *, process_index: int | None = None,
                process_count: int | None = None, limit: int | None = None, download: bool = False) -> Source:
    """This process's shard of `split` of dataset `name`.

    name: "fashion_mnist" (local IDX files -> TFDS, see `fashion_mnist.py`; `limit` keeps the first
    examples of each split), "folder:<root>" (class sub-folders of images), "imagenet2012" or any other
    TFDS name already prepared under `data_dir`. `download=True` only lets Fashion-MNIST fall back to
    the TFDS download. process_index/count default to JAX's (pass them to simulate several hosts).
    """
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if name.startswith("folder:"):
        return _folder_source(name[len("folder:"):], split, process_index, process_count)
    if name == "fashion_mnist":
        builder = _fashion_mnist_builder(data_dir, limit, download)
    else:
        builder = _tfds_builder(name, data_dir)
    return _tfds_source(builder, split, process_index, process_count)
