"""Test-wide set-up: 8 fake CPU devices, offline hubs, quiet TF, the tests dir importable.

XLA_FLAGS must be set before the first `import jax` anywhere, hence here at conftest import.
"""

import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
