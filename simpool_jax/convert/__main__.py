"""python -m simpool_jax.convert SRC --out DIR: an official PyTorch checkpoint -> model directory.

    python -m simpool_jax.convert vits_dino_simpool_ep100.pth --out models/vits_dino_simpool
    python -m simpool_jax.convert resnet50_supervised_simpool_ep100.pth.tar --out models/rn50_sup

Detects the container, architecture, recipe, pooler and head; γ comes from the file's args or
name, else the official default with a warning (`--gamma` overrides). Strict: any unused,
missing or mis-shaped tensor is an error listing the keys, and nothing is written.
"""

from __future__ import annotations

import argparse
import sys

from simpool_jax.checkpoint import save_model_dir
from simpool_jax.convert import (
    CheckpointFormatError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
    load_torch_checkpoint,
)
from simpool_jax.models import BACKBONES


def _gamma(text: str) -> float | str | None:
    """'auto' (detect), 'none' (no gamma) or a number."""
    if text.lower() in ("auto", "none"):
        return None if text.lower() == "none" else "auto"
    return float(text)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, convert, write DIR (model.json + orbax variables). Returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m simpool_jax.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help=".pth / .pth.tar file (DINO, timm or bare state_dict)")
    parser.add_argument("--out", required=True, help="model directory to write")
    parser.add_argument("--arch", choices=sorted(BACKBONES), help="override the detected backbone")
    parser.add_argument("--recipe", choices=["dino", "supervised"], help="override the detected recipe")
    parser.add_argument("--gamma", type=_gamma, default="auto",
                        help="SimPool gamma: a number or 'none' (default: from the file)")
    parser.add_argument("--key", help="entry to read: teacher|student (DINO), state_dict|state_dict_ema (timm)")
    parser.add_argument("--allow-missing", metavar="REGEX",
                        help="torch keys that may be missing or unused (e.g. '^fc\\.' to drop a classifier)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="unpickle with arbitrary globals (only for files you trust)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    try:
        _, variables, record = load_torch_checkpoint(
            args.src, key=args.key, arch=args.arch, recipe=args.recipe, gamma=args.gamma,
            allow_missing=args.allow_missing, trust=args.trust_checkpoint)
    except (CheckpointFormatError, CheckpointMismatchError, UnsafeCheckpointError,
            FileNotFoundError, ValueError) as err:
        print(f"error: {err}\nnothing written.", file=sys.stderr)
        return 1
    for note in record["source"]["notes"]:
        print(f"note: {note}", file=sys.stderr)
    try:
        out = save_model_dir(args.out, record["model"], variables, record["source"],
                             overwrite=args.overwrite)
    except FileExistsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    model = record["model"]
    print(f"wrote {out}: {model['backbone']} + {model['pooling']} ({model['recipe']} recipe, "
          f"head {model.get('head', 'none')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
