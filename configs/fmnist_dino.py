"""DINO + SimPool on the embedded Fashion-MNIST, CPU-sized: the README's main job.

    python train.py --config=configs/fmnist_dino.py --workdir=workdirs/main
    python train.py --config=configs/fmnist_dino.py:gap --workdir=workdirs/main_gap
    python train.py --config=configs/fmnist_dino.py:cls --workdir=workdirs/main_cls

The argument picks the pooling (simpool, gap, cls) at the same budget. A 4-block ViT (width 96,
3 heads, 4x4 patches: 7x7 tokens on 28 px) trained with DINO's recipe scaled down: 2 global
crops of 28 px and 4 local crops of 12 px, AdamW, batch 64, 600 steps, out_dim 256.
At the end: weighted k-NN (k = 10, 20; T = 0.07) of the teacher's features, test split against
the train split. Measured results (k-NN top-1, SimPool vs GAP / CLS vs random init): README.
The k-NN batch of 500 (the measured runs' setting) needs a device count dividing it; on 8 devices
add --config.knn.train.batch_size=512 --config.knn.test.batch_size=512 (checked at start-up).
"""

import ml_collections


def get_config(arg: str = "simpool") -> ml_collections.ConfigDict:
    """Config for pooling = arg."""
    if arg not in ("simpool", "gap", "cls"):
        raise ValueError(f"config argument must be simpool, gap or cls, got {arg!r}")
    c = ml_collections.ConfigDict()
    c.trainer = "dino"
    c.seed = 0
    # "bfloat16_matmul": bf16 products, float32 elsewhere (torch.autocast's numerics; the faster
    # bf16 mode on CPU); "bfloat16": bf16 activations too. Both keep float32 master weights.
    c.compute_dtype = "float32"
    c.image_size = 28
    c.model = dict(
        backbone="vit_tiny",
        backbone_kwargs=dict(width=96, depth=4, num_heads=3, patch_size=4, posemb_grid=(7, 7),
                             drop_path_rate=0.1),
        pooling=arg,
        pooling_kwargs=dict(gamma=1.25, use_beta=True) if arg == "simpool" else {},
        recipe="dino",
        head="dino",
        head_kwargs=dict(out_dim=256, use_bn=False, norm_last_layer=True, hidden_dim=512,
                         bottleneck_dim=128),
    )
    c.teacher_drop_path = False
    crops = ("dino_multicrop(global_size=28, local_size=12, n_local=4, global_scale=(0.4, 1.0), "
             "local_scale=(0.1, 0.4), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))")
    c.input = dict(name="fashion_mnist", split="train", batch_size=64, shuffle_buffer=10_000,
                   limit=ml_collections.config_dict.placeholder(int), pp=f"decode(3)|{crops}")
    eval_pp = "decode(3)|resize(28)|normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))"
    c.knn = dict(
        train=dict(name="fashion_mnist", split="train", batch_size=500, pp=eval_pp,
                   limit=ml_collections.config_dict.placeholder(int)),
        test=dict(name="fashion_mnist", split="test", batch_size=500, pp=eval_pp,
                  limit=ml_collections.config_dict.placeholder(int)),
        ks=(10, 20), temperature=0.07)
    c.total_epochs = 1
    c.total_steps = 600  # > 0 overrides total_epochs (0.64 epoch: the CPU budget of the main job)
    c.stop_after_steps = 0
    # A run this short needs a faster start than ImageNet DINO: 8x the lr, constant weight decay,
    # a teacher that follows closer (momentum 0.99 -> 1) and 256 prototypes.
    c.optim = dict(name="adamw", lr=4e-3, min_lr=1e-6, warmup_epochs=0.03, weight_decay=0.04,
                   weight_decay_end=0.04)
    c.dino = dict(student_temp=0.1, teacher_temp=0.04, warmup_teacher_temp=0.04,
                  warmup_teacher_temp_epochs=0, center_momentum=0.9, clip_grad=3.0,
                  freeze_last_layer_epochs=0, momentum_teacher=0.99)
    c.mesh = (("data", -1),)
    c.log_every = 50
    c.eval_every = 0
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.init_from = ""
    c.init_skip = ""
    c.tensorboard = True
    return c
