"""Fixtures of the data tests: a small Fashion-MNIST TFDS build (once per session) and an
independent reader of the Debian IDX files to check it against."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf
from markers import needs_fashion_mnist

# Grappler re-optimises every tf.data function when an iterator starts (~4 s for a multi-crop graph
# on this CPU); results are identical without it, and the tests start many small pipelines.
tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
LIMIT = 300  # examples kept per split in the test build

needs_fmnist = needs_fashion_mnist


def idx_array(name: str) -> np.ndarray:
    """Read an IDX .gz file straight from its documented layout (header: 4 bytes + 4 per dim)."""
    with gzip.open(os.path.join(FMNIST_DIR, name)) as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw[4:4 + 4 * ndim], ">u4")
    return np.frombuffer(raw[4 + 4 * ndim:], np.uint8).reshape(dims)


@pytest.fixture(scope="session")
def fmnist_dir(tmp_path_factory) -> str:
    """A TFDS data_dir holding fashion_mnist(limit=LIMIT), built once from the Debian files."""
    if not os.path.isdir(FMNIST_DIR):
        pytest.skip("Debian dataset-fashion-mnist is not installed")
    import tensorflow_datasets as tfds

    from simpool_jax.data import get_dataset

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    tfds.disable_progress_bar()
    get_dataset("fashion_mnist", "train", data_dir, process_index=0, process_count=1, limit=LIMIT)
    return data_dir
