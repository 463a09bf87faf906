"""Reading official SimPool / DINO / timm PyTorch checkpoint files, safely.

These files are pickles from the internet. We load them with `weights_only=True`, allow-listing
only `argparse.Namespace` (the `args` entry of DINO and timm checkpoints); a file that needs any
other global is refused with a message naming it and `--trust-checkpoint`. Then we find the
state_dict inside the container, strip DDP / MultiCropWrapper prefixes, drop tensors that have
no counterpart (SplitBN `aux_bn` copies, `num_batches_tracked`) and rename pre-release SimPool
keys (SIMPOOL.md §7.4) to the current names.
"""

from __future__ import annotations

import argparse
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from simpool_jax.convert.state_dict import to_numpy

# Keys without a Flax counterpart: SplitBN auxiliary BNs (timm --split-bn) and BN step counters.
DROPPED = re.compile(r"(^|\.)aux_bn\.|num_batches_tracked$")
# Pre-release SimPool names (SIMPOOL.md §7.4), applied to top-level keys after prefix stripping.
LEGACY_ALIASES = (
    (re.compile(r"^attn\.(wq|wk|beta|norm_patches)"), r"simpool.\1"),
    (re.compile(r"^norm_patches\."), "simpool.norm_patches."),
    (re.compile(r"^norm_output\."), "norm."),
)


class CheckpointFormatError(ValueError):
    """The file is not a readable PyTorch checkpoint of a known layout."""


class UnsafeCheckpointError(ValueError):
    """The file needs globals beyond the allow-list to unpickle."""


@dataclass
class TorchCheckpoint:
    """A state_dict ready for mapping, plus what the container told us about it."""

    state_dict: dict[str, np.ndarray]
    container: str  # 'dino' (teacher/student dict), 'timm' (CheckpointSaver dict) or 'bare'
    key: str | None  # the entry the state_dict came from
    args: dict[str, Any] = field(default_factory=dict)
    arch: str | None = None  # timm's top-level 'arch' or args.arch
    notes: list[str] = field(default_factory=list)


def load_file(path: str | Path, trust: bool = False) -> Any:
    """torch.load on CPU: weights-only with argparse.Namespace allowed, unless `trust`."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        if trust:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        names = re.findall(r"Unsupported global: GLOBAL (\S+)", str(err))
        if not names:  # not a refused global: a damaged or foreign file (e.g. a text file)
            detail = str(err).split("WeightsUnpickler error:")[-1].strip().split("\n")[0]
            raise CheckpointFormatError(
                f"cannot read {path} as a PyTorch checkpoint (truncated or not a torch file?): "
                f"{detail[:200]}") from err
        raise UnsafeCheckpointError(
            f"{path} needs the Python global(s) {', '.join(names)} to unpickle, which a weights-only "
            "load refuses (a pickle can run arbitrary code). If you trust the file, rerun with "
            "--trust-checkpoint (load_torch_checkpoint(..., trust=True))."
        ) from err
    except Exception as err:  # torch raises RuntimeError, KeyError, EOFError... on damaged files
        raise CheckpointFormatError(
            f"cannot read {path} as a PyTorch checkpoint (truncated or not a torch file?): "
            f"{type(err).__name__}: {str(err)[:200]}"
        ) from err


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(hasattr(v, "shape") for v in obj.values())


def _unpack(obj: Any, key: str | None) -> tuple[str, str | None, dict]:
    """(container kind, chosen key, raw state_dict) of a loaded checkpoint object."""
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"expected a dict, got {type(obj).__name__}")
    if "teacher" in obj or "student" in obj:
        kind, default = "dino", "teacher"
    elif "state_dict" in obj or "state_dict_ema" in obj:
        kind, default = "timm", "state_dict_ema" if "state_dict_ema" in obj else "state_dict"
    elif _is_state_dict(obj):
        if key is not None:
            raise CheckpointFormatError(f"--key {key!r} given but the file is a bare state_dict")
        return "bare", None, obj
    else:
        raise CheckpointFormatError(
            f"unknown checkpoint layout; top-level keys: {sorted(map(str, obj))[:20]}")
    key = key or default
    if key not in obj or not _is_state_dict(obj[key]):
        choices = sorted(k for k in obj if _is_state_dict(obj[k]))
        raise CheckpointFormatError(f"no state_dict under key {key!r}; available: {choices}")
    return kind, key, obj[key]


def _strip_prefix(key: str) -> str:
    for prefix in ("module.", "backbone."):
        key = key.removeprefix(prefix)
    return key


def read_checkpoint(path: str | Path, key: str | None = None, trust: bool = False) -> TorchCheckpoint:
    """Load `path` and return its state_dict with prefixes stripped and legacy names renamed.

    key: entry to read ('teacher' / 'student' for DINO files, 'state_dict' / 'state_dict_ema' for
    timm files); by default the teacher, or the EMA weights when present.
    """
    obj = load_file(path, trust)
    kind, key, raw = _unpack(obj, key)
    args = obj.get("args") if kind != "bare" else None
    args = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    arch = obj.get("arch") if kind == "timm" else None
    notes = [f"read {kind} checkpoint" + (f" entry {key!r}" if key else "")]
    state_dict, dropped, renamed = {}, 0, []
    for name, value in to_numpy(raw).items():
        name = _strip_prefix(name)
        if DROPPED.search(name):
            dropped += 1
            continue
        for pattern, replacement in LEGACY_ALIASES:
            new = pattern.sub(replacement, name)
            if new != name:
                renamed.append(f"{name} -> {new}")
                name = new
                break
        if name in state_dict:
            raise CheckpointFormatError(f"two tensors map to {name!r} after prefix stripping")
        state_dict[name] = value
    if dropped:
        notes.append(f"ignored {dropped} tensors without a Flax counterpart (aux_bn, num_batches_tracked)")
    if renamed:
        notes.append("renamed pre-release SimPool keys: " + ", ".join(renamed))
    return TorchCheckpoint(state_dict, kind, key, args, arch or args.get("arch"), notes)
