"""DINO + SimPool ViT-S/16 on ImageNet-1k: the paper's main self-supervised run, by the name the
project's users know it by.

    python train.py --config=configs/vit_s_dino_simpool.py --workdir=workdirs/dino_vit_s_simpool
    python train.py --config=configs/vit_s_dino_simpool.py --workdir=workdirs/dino_vit_s_nogamma --config.model.pooling_kwargs={}
    python train.py --config=configs/vit_s_dino_simpool.py --workdir=workdirs/dino_vit_s_300ep --config.total_epochs=300

This is `configs/imagenet_dino.py:vit_s,simpool`, read from that file so that the two cannot
drift apart; that file also holds the ResNet-50 and ConvNeXt-S runs, the CLS / GAP baselines and
the details. 100 epochs, 800 images per step (8 GPUs x 100), AdamW, γ 1.25 + β, DINO head with
65536 outputs. Published ImageNet-1k results (k-NN k = 10 / linear probe; SimPool's
self_supervised README): 69.7 / 72.8; no γ 69.8 / 72.6; 300 epochs 72.6 / 75.0. `knn_top1_k10` in
the workdir's `knn.json` is the k-NN number. Not run here: no ImageNet and no accelerator.
"""

import importlib.util
from pathlib import Path

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    """configs/imagenet_dino.py's get_config("vit_s,simpool")."""
    spec = importlib.util.spec_from_file_location(
        "imagenet_dino", Path(__file__).with_name("imagenet_dino.py"))
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    return recipes.get_config("vit_s,simpool")
