"""Weighted k-NN evaluation (DINO protocol) of any checkpoint on any dataset.

    python eval_knn.py --checkpoint workdirs/main --dataset fashion_mnist
    python eval_knn.py --checkpoint vits_dino_simpool_ep100.pth --dataset imagenet2012 --k 10,20,100,200
    python eval_knn.py --checkpoint models/x --dataset folder:/data/pets --out knn.json

--checkpoint: a train.py workdir (DINO: the teacher), a model directory from
`python -m simpool_jax.convert`, or an official .pth / .pth.tar. --dataset: a TFDS name or
folder:<root> with train/ and val/ (or test/) class folders. Features are the model's
representation (before l2 normalisation), extracted with the batch sharded over all devices and
padded eval batches masked out; the similarity search runs in chunks (bounded memory).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from simpool_jax.evaluate.datasets import eval_split, run_knn_settings  # noqa: E402


def positive_ints(text: str) -> tuple[int, ...]:
    """'10,20' -> (10, 20); anything else is a usage error before any work starts."""
    from simpool_jax.evaluate.knn import check_knn_settings

    try:
        ks = tuple(int(k) for k in text.split(","))
        check_knn_settings(ks, 1.0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected positive integers like 10,20; got {text!r}")
    return ks


def positive_float(text: str) -> float:
    """'0.07' -> 0.07; zero, negative or not a number is a usage error."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, extract features, run k-NN, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--k", type=positive_ints, default=(10, 20, 100, 200),
                        help="comma-separated k values (default: 10,20,100,200)")
    parser.add_argument("--temperature", type=positive_float, default=0.07)
    parser.add_argument("--batch-size", type=int,
                        help="default: the run's own k-NN batch size, else 256 (SimPool's batch "
                             "minimum makes features depend slightly on it)")
    parser.add_argument("--pp", help="eval preprocessing spec (default: from the run or the dataset)")
    parser.add_argument("--data-dir")
    parser.add_argument("--limit", type=int, help="first N examples of each split (quick checks)")
    parser.add_argument("--out", help="JSON file for the results")
    args = parser.parse_args(argv)

    import jax

    from simpool_jax.checkpoint import load_model
    from simpool_jax.data import make_eval_iterator
    from simpool_jax.evaluate.extract import extract_features
    from simpool_jax.evaluate.knn import knn_accuracy
    from simpool_jax.host_memory import keep_cpu_scratch_memory
    from simpool_jax.parallel import make_mesh

    keep_cpu_scratch_memory()

    try:
        model, variables, record = load_model(args.checkpoint)
        mesh = make_mesh((("data", -1),))
        settings = run_knn_settings(args.dataset, record)
        pp = args.pp or settings["pp"]
        batch_size = args.batch_size or settings["batch_size"]
        forward = jax.jit(lambda x: model.apply(variables, x, with_head=False)["features"])
        features = {}
        for split in ("train", eval_split(args.dataset)):
            config = dict(name=args.dataset, split=split, batch_size=batch_size, pp=pp,
                          data_dir=args.data_dir, limit=args.limit)
            features[split] = extract_features(forward, make_eval_iterator(config, mesh))
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    train, test = features.values()
    result = knn_accuracy(*train, *test, ks=args.k, temperature=args.temperature)
    for k, acc in result.items():
        print(f"k={k:<4d} top-1 {acc['top1']:.2f}  top-5 {acc['top5']:.2f}")
    if args.out:
        report = {"checkpoint": str(args.checkpoint), "dataset": args.dataset, "pp": pp,
                  "temperature": args.temperature, "train_examples": len(train[0]),
                  "test_examples": len(test[0]), "knn": {str(k): v for k, v in result.items()}}
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
