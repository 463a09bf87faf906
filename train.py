"""Train a model from a config file (big_vision style).

    python train.py --config=configs/fmnist_supervised.py --workdir=workdirs/fmnist_simpool
    python train.py --config=configs/fmnist_supervised.py:gap --workdir=... --config.total_epochs=1

`config.trainer` picks the trainer. Every config field can be overridden on the command line;
unknown fields are errors. Re-running the same command resumes from the workdir's latest
checkpoint. Several processes (hosts): start train.py in each with SIMPOOL_DISTRIBUTED=1 and the
same --workdir (a shared filesystem); see simpool_jax.parallel.maybe_initialize_distributed.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "config file: path[:arg]", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, logs and the config")
flags.mark_flags_as_required(["config", "workdir"])

TRAINERS = ("supervised", "dino")


def prepare_workdir(workdir: str) -> Path:
    """Create the workdir or fail clearly if it cannot be written (a uniquely named probe file, as
    every process of a multi-process run probes the same directory)."""
    path = Path(workdir).absolute()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_test"):
            pass
    except OSError as err:
        raise SystemExit(f"error: cannot write to workdir {path}: {err.strerror}") from None
    return path


def main(argv: list[str]) -> None:
    """Initialise devices, build the trainer's job, run the loop."""
    del argv
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    from simpool_jax.parallel import make_mesh, maybe_initialize_distributed

    try:
        maybe_initialize_distributed()
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    import jax

    from simpool_jax.host_memory import keep_cpu_scratch_memory

    keep_cpu_scratch_memory()  # before anything else creates the backends

    from simpool_jax.train import loop

    config = _CONFIG.value
    if config.get("trainer") not in TRAINERS:
        raise SystemExit(f"error: config.trainer must be one of {TRAINERS}, got {config.get('trainer')!r}")
    workdir = prepare_workdir(_WORKDIR.value)
    if jax.process_count() > 1:
        print(f"process {jax.process_index()} of {jax.process_count()}: "
              f"{jax.local_device_count()} of {jax.device_count()} devices", flush=True)
    if config.trainer == "supervised":
        from simpool_jax.train.supervised_trainer import build_job
    else:
        from simpool_jax.train.dino_trainer import build_job
    try:
        mesh = make_mesh(tuple(tuple(axis) for axis in config.get("mesh", (("data", -1),))))
        job = build_job(config, mesh, workdir)
        loop.run(job, config, workdir)
    except (ValueError, FileNotFoundError, loop.NonFiniteError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)

