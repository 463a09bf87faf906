"""Run train.py in a subprocess on a tiny Fashion-MNIST config (shared by the trainer tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

SUPERVISED, DINO = "configs/fmnist_supervised.py", "configs/fmnist_dino.py"
# 1-block ViTs on 512 training images: seconds per run, still the full train.py path.
_SMALL_VIT = ["--config.input.limit=512", "--config.model.backbone_kwargs.depth=1",
              "--config.model.backbone_kwargs.width=32", "--config.model.backbone_kwargs.num_heads=2",
              "--config.log_every=1", "--config.tensorboard=False"]
TINY = {
    SUPERVISED: _SMALL_VIT + ["--config.eval_input.limit=256", "--config.input.batch_size=32",
                              "--config.eval_input.batch_size=64"],
    DINO: _SMALL_VIT + ["--config.input.batch_size=16", "--config.model.head_kwargs.out_dim=64",
                        "--config.model.head_kwargs.hidden_dim=32",
                        "--config.model.head_kwargs.bottleneck_dim=16",
                        "--config.knn.train.limit=256", "--config.knn.test.limit=128"],
}


def train_command(workdir: Path, *overrides: str, config: str = SUPERVISED) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), f"--config={ROOT / config}",
            f"--workdir={workdir}", *TINY[config], *overrides]


def environment(devices: int = 1) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", HF_HUB_OFFLINE="1",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return env


def run_train(workdir: Path, *overrides: str, devices: int = 1, check: bool = True,
              timeout: int = 300, config: str = SUPERVISED) -> subprocess.CompletedProcess:
    result = subprocess.run(train_command(workdir, *overrides, config=config), cwd=ROOT,
                            env=environment(devices),
                            capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"train.py failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


def logged(workdir: Path, key: str = "loss") -> dict[int, float]:
    """step -> value of `key` from metrics.jsonl (later lines win, as after a resume)."""
    out = {}
    for line in (workdir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if key in record:
            out[record["step"]] = record[key]
    return out


def saved_params(workdir: Path, step: int) -> dict:
    """The params of checkpoint `step` (on one local device, whoever saved them), without building
    the model."""
    from simpool_jax.checkpoint import restore_local

    return restore_local(workdir / "checkpoints" / str(step) / "default")["params"]


def complete_steps(workdir: Path) -> list[int]:
    directory = workdir / "checkpoints"
    return sorted(int(p.name) for p in directory.iterdir()
                  if p.name.isdigit() and (p / "commit_success.txt").exists())


def assert_trees_equal(a, b) -> None:
    import jax

    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
