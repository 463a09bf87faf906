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

import numpy as np

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


def restore_local(directory: str | Path) -> Any:
    """An orbax StandardSave tree restored onto this process's first device, whoever saved it.

    A checkpoint records its arrays' shardings, and orbax refuses to restore them as saved on other
    devices (e.g. a two-process run's, read by one process, or any run's, read inside a
    multi-process run for `init_from`); readers of whole models want them on one local device.
    """
    import jax
    import orbax.checkpoint as ocp

    directory = Path(directory)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
                          ocp.StandardCheckpointHandler().metadata(directory).tree)
    return ocp.StandardCheckpointer().restore(directory, target)


def load_model_dir(directory: str | Path) -> tuple[Model, dict, dict]:
    """(model, variables, config record) from a directory written by `save_model_dir`."""
    directory = Path(directory).absolute()
    if not (directory / MODEL_JSON).is_file():
        raise FileNotFoundError(f"{directory} is not a model directory: no {MODEL_JSON} "
                                "(convert a .pth with `python -m simpool_jax.convert`)")
    record = json.loads((directory / MODEL_JSON).read_text())
    variables = restore_local(directory / VARIABLES_DIR)
    return build_model(record["model"]), variables, record


def load_train_workdir(workdir: str | Path) -> tuple[Model, dict, dict]:
    """(model, variables, record) of the latest checkpoint of a train.py workdir.

    DINO runs give the teacher (what DINO evaluates), without drop path; supervised runs the EMA
    weights when the run kept them, else the raw ones.
    """
    workdir = Path(workdir).absolute()
    config = json.loads((workdir / "config.json").read_text())
    steps = sorted(int(p.name) for p in (workdir / "checkpoints").glob("[0-9]*")
                   if (p / "commit_success.txt").exists())
    if not steps:
        raise FileNotFoundError(f"{workdir} has no complete checkpoint yet")
    state = restore_local(workdir / "checkpoints" / str(steps[-1]) / "default")
    model_config = config["model"]
    if config.get("trainer") == "dino":
        model_config = dict(model_config, backbone_kwargs={
            **model_config.get("backbone_kwargs", {}), "drop_path_rate": 0.0})
        variables = {"params": state["teacher_params"], "batch_stats": state["teacher_batch_stats"]}
    elif "ema_params" in state:
        variables = {"params": state["ema_params"], "batch_stats": state["ema_batch_stats"]}
    else:
        variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    record = {"format": 1, "model": model_config,
              "source": {"path": str(workdir), "step": steps[-1], "train_config": config}}
    return build_model(model_config), variables, record


def load_model(path: str | Path, **overrides: Any) -> tuple[Model, dict, dict]:
    """A model directory, a train.py workdir, or an official .pth / .pth.tar converted on the fly
    (`overrides` go to `simpool_jax.convert.load_torch_checkpoint`)."""
    if Path(path).is_dir():
        if overrides:
            raise ValueError(f"options {sorted(overrides)} only apply to .pth files, not to {path}")
        if (Path(path) / "checkpoints").is_dir() and (Path(path) / "config.json").is_file():
            return load_train_workdir(path)
        return load_model_dir(path)
    from simpool_jax.convert import load_torch_checkpoint

    return load_torch_checkpoint(path, **overrides)


def state_differences(stored: Any, wanted: Any) -> list[str]:
    """One line per array of the checkpoint's metadata tree `stored` and the `wanted` state
    (ShapeDtypeStructs or arrays) that differs in shape or dtype (the params first), then per
    array only in one.

    Paths are compared as orbax stores them: every key as a string (named tuples such as optax's
    states become dicts, tuple keys their repr)."""
    import jax

    def name(key: Any) -> str:
        for attribute in ("key", "name", "idx"):  # DictKey, GetAttrKey, SequenceKey
            if hasattr(key, attribute):
                return str(getattr(key, attribute))
        return str(key)

    def by_path(tree: Any) -> dict:
        return {"/".join(name(k) for k in path): leaf
                for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}

    have, want = by_path(stored), by_path(wanted)
    lines = []
    for k in sorted(have.keys() & want.keys(), key=lambda k: (not k.startswith("params/"), k)):
        (s1, d1), (s2, d2) = ((tuple(x.shape), np.dtype(x.dtype)) for x in (have[k], want[k]))
        if (s1, d1) != (s2, d2):
            lines.append(f"{k}: checkpoint {s1} {d1}, this config {s2} {d2}")
    lines += [f"{k}: only in the checkpoint" for k in sorted(have.keys() - want.keys())]
    lines += [f"{k}: not in the checkpoint" for k in sorted(want.keys() - have.keys())]
    return lines


class TrainCheckpoints:
    """Train-state checkpoints in `<workdir>/checkpoints` with orbax's CheckpointManager.

    Saves are asynchronous (training goes on while the arrays are written); orbax writes each
    step to a temporary directory and renames it when complete, so a process killed mid-write
    leaves the previous checkpoint as the latest. The last `keep` steps are kept.
    """

    def __init__(self, workdir: str | Path, keep: int = 3):
        import orbax.checkpoint as ocp

        self._ocp = ocp
        self.directory = Path(workdir).absolute() / "checkpoints"
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None."""
        return self.manager.latest_step()

    def save(self, step: int, state: dict) -> None:
        """Start writing `state` for `step` (returns before the write finishes)."""
        self.manager.save(step, args=self._ocp.args.StandardSave(state), force=True)

    def restore(self, step: int, abstract_state: Any) -> dict:
        """Restore `step` into arrays with the shardings of `abstract_state` (ShapeDtypeStructs).

        A checkpoint of another model or trainer (the workdir reused with a changed config) is a
        ValueError naming the differing arrays, before orbax reads anything."""
        stored = self._ocp.StandardCheckpointHandler().metadata(
            self.directory / str(step) / "default").tree
        differences = state_differences(stored, abstract_state)
        if differences:
            shown = "\n  ".join(differences[:8])
            more = f"\n  ... and {len(differences) - 8} more" if len(differences) > 8 else ""
            raise ValueError(
                f"checkpoint {self.directory / str(step)} does not match the state this config "
                f"builds ({len(differences)} differences):\n  {shown}{more}\nResume with the "
                "config it was written with (the workdir's config.json) or use a new --workdir")
        return self.manager.restore(step, args=self._ocp.args.StandardRestore(abstract_state))

    def wait(self) -> None:
        """Block until pending writes are complete."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending writes and release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()
