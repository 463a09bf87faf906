"""Model directories: parameters saved with orbax plus the model config as JSON beside them.

A directory written by `python -m simpool_jax.convert` (or, later, a trainer export) holds
`model.json` ({"model": <build_model config>, "source": {...}}) and `variables/` (orbax), so any
command rebuilds the model from the directory alone. Writes go to a temporary sibling that is
renamed into place at the end: a crash or an error leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


from simpool_jax.model import Model, build_model

MODEL_JSON = "model.json"
VARIABLES_DIR = "variables"


def save_model_dir(
    directory: str | Path, model_config: dict, variables: dict, source: dict | None = None,
    overwrite: bool = False,
) -> Path:
    """Write `variables` (params, batch_stats) and `model_config` to `directory`, atomically."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if directory.exists() and not overwrite:
        raise FileExistsError(f"{directory} exists; choose another --out or pass --overwrite")
    tmp = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        checkpointer = ocp.StandardCheckpointer()
        checkpointer.save(tmp / VARIABLES_DIR, dict(variables))
        checkpointer.wait_until_finished()
        record = {"format": 1, "model": model_config, "source": source or {}}
        (tmp / MODEL_JSON).write_text(json.dumps(record, indent=2, default=str) + "\n")
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def load_model_dir(directory: str | Path) -> tuple[Model, dict, dict]:
    """(model, variables, config record) from a directory written by `save_model_dir`."""
    import orbax.checkpoint as ocp

    directory = Path(directory).absolute()
    if not (directory / MODEL_JSON).is_file():
        raise FileNotFoundError(f"{directory} is not a model directory: no {MODEL_JSON} "
                                "(convert a .pth with `python -m simpool_jax.convert`)")
    record = json.loads((directory / MODEL_JSON).read_text())
    variables = ocp.StandardCheckpointer().restore(directory / VARIABLES_DIR)
    return build_model(record["model"]), variables, record


def load_model(path: str | Path, **overrides: Any) -> tuple[Model, dict, dict]:
    """A model directory, or an official .pth / .pth.tar converted on the fly (`overrides` go to
    `simpool_jax.convert.load_torch_checkpoint`)."""
    if Path(path).is_dir():
        if overrides:
            raise ValueError(f"options {sorted(overrides)} only apply to .pth files, not to {path}")
        return load_model_dir(path)
    from simpool_jax.convert import load_torch_checkpoint

    return load_torch_checkpoint(path, **overrides)
