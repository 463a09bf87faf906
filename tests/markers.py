"""Test markers shared by the test folders."""

from pathlib import Path

import pytest

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

# setup.sh installs Debian's dataset-fashion-mnist where apt-get exists; CI always has it.
needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian dataset-fashion-mnist is not installed (setup.sh)")
