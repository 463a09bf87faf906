"""Fashion-MNIST as a TFDS dataset built offline from the four IDX files of Debian's
`dataset-fashion-mnist` package (or any folder holding them), so the embedded default dataset goes
through exactly the TFDS -> tf.data path that ImageNet takes. Features match TFDS's own
`fashion_mnist` (image 28 x 28 x 1 PNG, 10-class label), so either builder feeds the pipeline.
"""

from __future__ import annotations

import dataclasses
import gzip
import os

import numpy as np
import tensorflow_datasets as tfds

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
SOURCE_DIR_ENV = "SIMPOOL_FASHION_MNIST_DIR"
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def source_dir() -> str:
    """Where the IDX files are looked for: $SIMPOOL_FASHION_MNIST_DIR, else the Debian path."""
    return os.environ.get(SOURCE_DIR_ENV, DEBIAN_DIR)


def files_present(directory: str) -> bool:
    """Whether all four IDX files are in `directory`."""
    return all(os.path.isfile(os.path.join(directory, f)) for pair in FILES.values() for f in pair)


def read_idx(path: str) -> np.ndarray:
    """An IDX file (gzipped or not) as a numpy array: magic (0, 0, dtype, ndim), big-endian dims."""
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        data = f.read()
    if data[:2] != b"\0\0" or data[2] != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


@dataclasses.dataclass
class IdxConfig(tfds.core.BuilderConfig):
    """`limit`: keep only the first `limit` examples of each split (small builds for tests)."""

    directory: str = ""
    limit: int | None = None


def config(directory: str | None = None, limit: int | None = None) -> IdxConfig:
    """The builder config for the IDX files in `directory` (default `source_dir()`)."""
    return IdxConfig(name="full" if limit is None else f"first{limit}", directory=directory or source_dir(),
                     limit=limit)


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
    """Fashion-MNIST (Zalando; MIT licence) from local IDX files: 60,000 train + 10,000 test."""

    VERSION = tfds.core.Version("1.0.0")  # always built with a `config(...)` (the directory is run-time)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(28, 28, 1)),
                "label": tfds.features.ClassLabel(names=CLASSES),
            }),
            supervised_keys=("image", "label"),
            homepage="https://github.com/zalandoresearch/fashion-mnist",
        )

    def _split_generators(self, dl_manager):
        directory = self.builder_config.directory
        if not files_present(directory):
            raise FileNotFoundError(
                f"Fashion-MNIST IDX files not found in {directory}: install the Debian package "
                f"(apt-get install dataset-fashion-mnist) or set ${SOURCE_DIR_ENV} to a folder holding "
                f"{', '.join(f for pair in FILES.values() for f in pair)}")
        return {split: self._generate_examples(split) for split in FILES}

    def _generate_examples(self, split: str):
        images_file, labels_file = FILES[split]
        images = read_idx(os.path.join(self.builder_config.directory, images_file))
        labels = read_idx(os.path.join(self.builder_config.directory, labels_file))
        n = len(labels) if self.builder_config.limit is None else min(self.builder_config.limit, len(labels))
        for i in range(n):
            yield i, {"image": images[i][..., None], "label": int(labels[i])}
