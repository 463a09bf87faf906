"""Per-dataset defaults of the evaluations (k-NN, linear probe): eval split and pp strings.

Eval: Resize 256 (bicubic) + CenterCrop 224 + ImageNet mean/std, DINO's eval transform; the probe's
train pp is eval_linear.py's RandomResizedCrop 224 (torchvision's default bilinear, scale 0.08-1)
+ horizontal flip. Fashion-MNIST keeps its 28 x 28 size and the (0.5, 0.5) normalisation of the
configs/fmnist_*.py runs.
"""

from __future__ import annotations

_FMNIST_NORMALIZE = "normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))"
FASHION_MNIST_PP = f"decode(3)|resize(28)|{_FMNIST_NORMALIZE}"
IMAGENET_PP = "decode(3)|resize_small(256)|central_crop(224)|normalize('imagenet')"
FASHION_MNIST_TRAIN_PP = f"decode(3)|rrc(28, method='bilinear')|flip_lr|{_FMNIST_NORMALIZE}"
IMAGENET_TRAIN_PP = "decode(3)|rrc(224, method='bilinear')|flip_lr|normalize('imagenet')"


def default_eval_pp(dataset: str) -> str:
    """Resize + centre crop + normalise for `dataset` (Fashion-MNIST: its own 28 x 28)."""
    return FASHION_MNIST_PP if dataset == "fashion_mnist" else IMAGENET_PP


def default_train_pp(dataset: str) -> str:
    """The linear probe's augmentation: RandomResizedCrop (bilinear) + flip + normalise."""
    return FASHION_MNIST_TRAIN_PP if dataset == "fashion_mnist" else IMAGENET_TRAIN_PP


def run_knn_settings(dataset: str, record: dict) -> dict:
    """The k-NN settings (pp, batch_size) of the train workdir's own evaluation on `dataset`.

    Same batches matter: SimPool's gamma-path minimum is taken over each batch, so features (and
    the k-NN result) depend slightly on the batch size, as in the official code.
    """
    knn = record.get("source", {}).get("train_config", {}).get("knn")
    if knn and knn["test"]["name"] == dataset:
        return {"pp": knn["test"]["pp"], "batch_size": knn["test"]["batch_size"]}
    return {"pp": default_eval_pp(dataset), "batch_size": 256}


def eval_split(dataset: str) -> str:
    """'test' or 'validation' for TFDS names; val/ or test/ for folders."""
    if dataset.startswith("folder:"):
        from simpool_jax.data.sources import folder_splits

        splits = folder_splits(dataset[len("folder:"):])
        for name in ("val", "validation", "test"):
            if name in splits:
                return name
        raise ValueError(f"{dataset} has no val/ or test/ folder (found {sorted(splits)})")
    return "validation" if dataset == "imagenet2012" else "test"
