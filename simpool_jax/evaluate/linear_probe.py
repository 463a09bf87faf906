"""python -m simpool_jax.evaluate.linear_probe: linear probe of a frozen backbone (DINO protocol).

    python -m simpool_jax.evaluate.linear_probe --checkpoint workdirs/main --dataset fashion_mnist
    python -m simpool_jax.evaluate.linear_probe --checkpoint vits_dino_simpool_ep100.pth \\
        --dataset imagenet2012 --batch-size 1024 --epochs 100 --workdir probes/vits_simpool

--checkpoint: a train.py workdir (DINO: the teacher), a model directory from
`python -m simpool_jax.convert`, or an official .pth / .pth.tar. --dataset: a TFDS name or
folder:<root> with train/ and val/ (or test/) class folders. The protocol is eval_linear.py's
(SIMPOOL.md §5.2): Linear(dim -> classes) with N(0, 0.01) weights on the frozen representation
(features, or the final-norm CLS of the last --n-last-blocks blocks of a CLS ViT), recomputed from
the augmented images in every step; SGD momentum 0.9, no weight decay, lr 0.001 x batch / 256 by
default, cosine to 0 over the epochs, stepped per epoch; train RandomResizedCrop + flip, eval
resize + centre crop (default: the run's own k-NN eval pp when it has one for the dataset); the
reported number is the best validation top-1 over the epochs, validated after every epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from simpool_jax.evaluate.datasets import (  # noqa: E402
    default_train_pp,
    eval_split,
    run_knn_settings,
)

HEAD_FILE = "head.npz"
RESULTS_FILE = "results.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line; --lr is 'auto' or a positive number."""
    parser = argparse.ArgumentParser(prog="python -m simpool_jax.evaluate.linear_probe",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True,
                        help="train workdir, model directory or .pth")
    parser.add_argument("--dataset", required=True, help="TFDS name or folder:<root>")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256, help="global batch, train and eval")
    parser.add_argument("--lr", default="auto",
                        help="'auto' = 0.001 x batch-size / 256 (eval_linear.py), or the lr itself")
    parser.add_argument("--steps-per-epoch", type=int,
                        help="default: ceil(train examples / batch size), as the official loader")
    parser.add_argument("--n-last-blocks", type=int, default=1,
                        help="CLS ViTs: concatenate the final-norm CLS of this many last blocks")
    parser.add_argument("--train-pp", help="train preprocessing (default: RRC + flip)")
    parser.add_argument("--eval-pp", help="eval preprocessing (default: from the run or dataset)")
    parser.add_argument("--data-dir")
    parser.add_argument("--limit", type=int, help="first N examples of each split (quick checks)")
    parser.add_argument("--seed", type=int, default=0, help="classifier init and data order")
    parser.add_argument("--out", help="JSON results (default: <workdir>/results.json if --workdir)")
    parser.add_argument("--workdir", help="folder for results.json and head.npz (best classifier)")
    args = parser.parse_args(argv)
    if args.lr != "auto":
        try:
            args.lr = float(args.lr)
        except ValueError:
            parser.error(f"--lr must be 'auto' or a number, got {args.lr!r}")
        if not args.lr > 0:
            parser.error(f"--lr must be positive, got {args.lr}")
    for name in ("epochs", "batch_size", "steps_per_epoch", "limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    return args


def run(args: argparse.Namespace) -> tuple[dict, dict]:
    """Load the model and data, train and validate the probe: (JSON-able results, best head)."""
    import jax

    from simpool_jax.checkpoint import load_model
    from simpool_jax.data import get_dataset, make_eval_iterator, make_train_iterator
    from simpool_jax.evaluate.linear import auto_lr, train_probe
    from simpool_jax.evaluate.representation import representation
    from simpool_jax.parallel import make_mesh

    model, variables, record = load_model(args.checkpoint)
    represent = representation(model, args.n_last_blocks)
    split = eval_split(args.dataset)
    sources = {s: get_dataset(args.dataset, s, args.data_dir, limit=args.limit)
               for s in ("train", split)}
    if sources["train"].num_classes != sources[split].num_classes:
        raise ValueError(f"{args.dataset}: train has {sources['train'].num_classes} classes, "
                         f"{split} {sources[split].num_classes}")
    train_pp = args.train_pp or default_train_pp(args.dataset)
    eval_pp = args.eval_pp or run_knn_settings(args.dataset, record)["pp"]
    steps_per_epoch = (args.steps_per_epoch
                       or math.ceil(sources["train"].num_examples / args.batch_size))
    lr = auto_lr(args.batch_size) if args.lr == "auto" else args.lr
    mesh = make_mesh((("data", -1),))
    common = dict(name=args.dataset, batch_size=args.batch_size, data_dir=args.data_dir,
                  limit=args.limit, seed=args.seed)
    train_batches = make_train_iterator(dict(common, split="train", pp=train_pp), mesh)
    main_process = jax.process_index() == 0

    def eval_batches():
        return make_eval_iterator(dict(common, split=split, pp=eval_pp), mesh)

    def report(r: dict) -> None:
        if main_process:
            print(f"epoch {r['epoch']}/{args.epochs}  loss {r['loss']:.4f}  lr {r['lr']:.6g}  "
                  f"val top-1 {r['top1']:.2f}  top-5 {r['top5']:.2f}  "
                  f"best {r['best_top1']:.2f} (epoch {r['best_epoch']})", flush=True)

    result = train_probe(represent, variables, mesh, train_batches, eval_batches,
                         num_classes=sources["train"].num_classes, epochs=args.epochs,
                         steps_per_epoch=steps_per_epoch, lr=lr, seed=args.seed, on_epoch=report)
    settings = {"epochs": args.epochs, "steps_per_epoch": steps_per_epoch,
                "batch_size": args.batch_size, "lr": lr,
                "lr_rule": "auto" if args.lr == "auto" else "given",
                "momentum": 0.9, "weight_decay": 0.0, "schedule": "cosine to 0, per epoch",
                "n_last_blocks": args.n_last_blocks, "feature_dim": result.feature_dim,
                "num_classes": sources["train"].num_classes,
                "train_pp": train_pp, "eval_pp": eval_pp,
                "train_examples": sources["train"].num_examples,
                "eval_split": split, "eval_examples": sources[split].num_examples,
                "limit": args.limit, "seed": args.seed, "devices": jax.device_count()}
    return {"checkpoint": str(args.checkpoint), "dataset": args.dataset,
            "best_top1": result.best_top1, "best_top5": result.best_top5,
            "best_epoch": result.best_epoch, "history": result.history, "settings": settings,
            "model": record.get("model")}, result.head


def output_paths(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """(results JSON, head npz) paths, their folders checked before any training is spent."""
    out = Path(args.out) if args.out else None
    head = None
    if args.workdir:
        workdir = Path(args.workdir)
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ValueError(f"cannot create --workdir {workdir}: {err.strerror}") from None
        head, out = workdir / HEAD_FILE, out or workdir / RESULTS_FILE
    if out and not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: folder {out.parent} does not exist")
    return out, head


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print the best top-1, write the outputs. Returns the exit code."""
    args = parse_args(argv)
    try:
        out, head_path = output_paths(args)
        results, head = run(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    import jax
    import numpy as np

    if jax.process_index() == 0:
        print(f"best val top-1 {results['best_top1']:.2f} (top-5 {results['best_top5']:.2f}) "
              f"at epoch {results['best_epoch']} of {args.epochs}")
        if head_path:
            np.savez(head_path, **head)
        if out:
            out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
