"""The ImageNet recipe configs (configs/imagenet_{supervised,dino}.py) against the published recipes.

Each config argument is loaded as train.py loads it (config_flags, locked) and checked without
ImageNet and without compiling anything: the model (and the DINO teacher) initialised under
`jax.eval_shape` at 224 px (DINO students also at the 96 px local crops), parameter counts against
timm models (pretrained=False) plus the closed forms of SimPool (2d^2 + 2d, + 1 for beta) and of
DINO's head, the hyperparameters against SIMPOOL.md §4.2 / §4.3 written out below, the schedules
the trainers build from them, and every pp string built through the data registry. Every command
in the configs' docstrings (the no-γ, 300-epoch and ViT-B overrides included) loads and builds.
"""

from __future__ import annotations

import ast
import functools
import inspect
import shlex
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags

from simpool_jax.data.ops.general import stats
from simpool_jax.data.pipeline import EVAL_DEFAULTS, TRAIN_DEFAULTS
from simpool_jax.data.registry import OPS, get_pp, parse_op, split_spec
from simpool_jax.model import build_model
from simpool_jax.train.dino import teacher_temperature
from simpool_jax.train.dino_trainer import dino_schedules, teacher_config
from simpool_jax.train.optim import make_optimizer
from simpool_jax.train.supervised_trainer import schedule_steps

ROOT = Path(__file__).resolve().parents[2]
SUPERVISED, DINO = "configs/imagenet_supervised.py", "configs/imagenet_dino.py"
IMAGENET_TRAIN = 1_281_167
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

# SIMPOOL.md §4.3 (timm README commands and the timm defaults they leave in place).
SUPERVISED_RECIPES = {
    "vit_s": dict(poolings=("simpool", "cls", "gap"), batch=592, opt="adamw", lr=5e-4, wd=0.05,
                  warmup_lr=1e-6, drop_path=0.1, ema=0.99996, gamma=1.25, mixup=(0.2, 0.0),
                  eval_resize=248, norm=HALF_STATS),  # crop_pct 0.9
    "resnet50": dict(poolings=("simpool", "gap"), batch=1024, opt="sgd", lr=0.4, wd=2e-5,
                     warmup_lr=1e-5, drop_path=None, ema=0.0, gamma=2.0, mixup=None,
                     eval_resize=235, norm=IMAGENET_STATS),  # crop_pct 0.95
    "convnext_s": dict(poolings=("simpool", "gap"), batch=1024, opt="adamw", lr=1e-3, wd=0.05,
                       warmup_lr=1e-6, drop_path=0.4, ema=0.9999, gamma=2.0, mixup=(0.8, 1.0),
                       eval_resize=235, norm=IMAGENET_STATS),
}
# SIMPOOL.md §4.2 (README commands over the fork's defaults) and ANCHORS.md §4.
DINO_RECIPES = {
    "vit_s": dict(baseline="cls", batch=800, opt="adamw", peak_lr=1.5625e-3, min_lr=1e-5,
                  wd=(0.04, 0.4), out_dim=65536, use_bn=False, norm_last_layer=False,
                  temp_epochs=30, clip=0.0, freeze=1, drop_path=(0.1, 0.0),
                  pooling_kwargs={"gamma": 1.25, "use_beta": True},
                  global_scale=(0.25, 1.0), local_scale=(0.05, 0.25)),
    "resnet50": dict(baseline="gap", batch=1280, opt="lars", peak_lr=1.5, min_lr=0.0048,
                     wd=(1e-6, 1e-6), out_dim=60000, use_bn=True, norm_last_layer=True,
                     temp_epochs=50, clip=0.0, freeze=1, drop_path=(None, None),
                     pooling_kwargs={"gamma": 2.0}, global_scale=(0.14, 1.0),
                     local_scale=(0.05, 0.14)),
    "convnext_s": dict(baseline="gap", batch=480, opt="adamw", peak_lr=1.875e-3, min_lr=2e-6,
                       wd=(0.04, 0.4), out_dim=65536, use_bn=False, norm_last_layer=True,
                       temp_epochs=50, clip=0.3, freeze=3, drop_path=(0.4, 0.4),
                       pooling_kwargs={"gamma": 2.0}, global_scale=(0.14, 1.0),
                       local_scale=(0.05, 0.14)),
}
SUPERVISED_ARGS = [f"{b},{p}" for b, r in SUPERVISED_RECIPES.items() for p in r["poolings"]]
DINO_ARGS = [f"{b},{p}" for b, r in DINO_RECIPES.items() for p in ("simpool", r["baseline"])]
TIMM_NAMES = {"vit_s": "vit_small_patch16_224", "vit_b": "vit_base_patch16_224",
              "resnet50": "resnet50", "convnext_s": "convnext_small"}
WIDTHS = {"vit_s": 384, "vit_b": 768, "resnet50": 2048, "convnext_s": 768}
# Paper Table 8 (and Table 9 for the ViT-S GAP baseline), M parameters with 1000 classes.
TABLE_8 = {"vit_s,cls": 22.1, "vit_s,gap": 22.1, "vit_s,simpool": 22.3, "resnet50,gap": 25.6,
           "resnet50,simpool": 33.9, "convnext_s,gap": 50.2, "convnext_s,simpool": 51.4}


def load(config: str, *overrides: str):
    """The config as `train.py --config=<config> <overrides>` gets it (locked)."""
    values = flags.FlagValues()
    argv = ["train.py", f"--config={ROOT / config}", *overrides]
    config_flags.DEFINE_config_file("config", None, "config", flag_values=values,
                                    lock_config=True, sys_argv=argv)
    values(argv)
    return values.config


@functools.lru_cache(maxsize=None)
def timm_count(name: str, **kwargs) -> int:
    """Trainable parameters of timm.create_model(name, pretrained=False, **kwargs), built on the
    meta device (shapes only: no weight initialisation to wait for)."""
    import torch

    from simpool_jax.convert.torch_env import import_timm

    with torch.device("meta"):
        model = import_timm().create_model(name, pretrained=False, **kwargs)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def simpool_count(d: int, beta: bool = False) -> int:
    """SimPool's LayerNorm (2d), W_Q and W_K (d x d each, no bias) and beta (SIMPOOL.md §1.1)."""
    return 2 * d * d + 2 * d + int(beta)


def dino_head_count(d: int, out_dim: int, use_bn: bool, norm_last_layer: bool,
                    hidden: int = 2048, bottleneck: int = 256) -> int:
    """Trainable parameters of DINO's head (ANCHORS.md §4.2): Linear d->h, [BN], GELU, Linear h->h,
    [BN], GELU, Linear h->b, then the weight-normed Linear b->K without bias, whose gain g is
    trained only with norm_last_layer=False."""
    mlp = d * hidden + hidden + hidden * hidden + hidden + hidden * bottleneck + bottleneck
    bn = 2 * 2 * hidden if use_bn else 0
    return mlp + bn + bottleneck * out_dim + (0 if norm_last_layer else out_dim)


def backbone_reference(backbone: str, pooling: str, num_classes: int) -> int:
    """timm's model with SimPool's CLS / pos-embed changes (no class token) or the baseline's."""
    name = TIMM_NAMES[backbone]
    if not backbone.startswith("vit"):
        return timm_count(name, num_classes=num_classes)
    if pooling == "simpool":  # SimPool ViTs: no class token, 196 pos-embed slots, one final LN
        return timm_count(name, num_classes=num_classes, class_token=False, global_pool="avg")
    return timm_count(name, num_classes=num_classes,
                      **({"global_pool": "avg"} if pooling == "gap" else {}))


def count(params) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(params))


def abstract_init(model, size: int) -> dict:
    images = jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), images)


def op_settings(spec: str) -> list[tuple[str, dict]]:
    """Each op of a pp spec, built through the registry, with all its arguments bound (defaults
    included), so the test sees the values the op runs with."""
    get_pp(spec)  # builds every op: unknown ops and bad arguments fail here
    settings = []
    for piece in split_spec(spec):
        name, args, kwargs = parse_op(piece)
        fn = inspect.unwrap(OPS[name])  # image ops: fn(image[, seed], *args, **kwargs)
        signature = inspect.signature(fn)
        lead = [None for p in list(signature.parameters)[:2] if p in ("image", "seed")]
        bound = signature.bind(*lead, *args, **kwargs)
        bound.apply_defaults()
        settings.append((name, {k: v for k, v in bound.arguments.items()
                                if k not in ("image", "seed")}))
    return settings


def docstring_commands(config: str) -> list[list[str]]:
    """The train.py command lines of a config's docstring, as argument lists."""
    doc = ast.get_docstring(ast.parse((ROOT / config).read_text()))
    return [shlex.split(line.strip())[2:] for line in doc.splitlines()
            if line.strip().startswith("python train.py --config=")]


# --- supervised -------------------------------------------------------------------------------


@pytest.mark.parametrize("arg", SUPERVISED_ARGS)
def test_supervised_recipe(arg):
    backbone, pooling = arg.split(",")
    r = SUPERVISED_RECIPES[backbone]
    c = load(f"{SUPERVISED}:{arg}")
    assert c.is_locked and c.trainer == "supervised" and c.image_size == 224
    reference = load("configs/fmnist_supervised.py")  # same trainer, run end to end by CLI tests
    assert set(c) == set(reference) and set(c.model) == set(reference.model)
    assert set(c.optim) <= {"name", "lr", "min_lr", "warmup_epochs", "warmup_init", "weight_decay",
                            "b1", "b2", "eps", "momentum", "nesterov", "clip_grad_norm",
                            "exclude_posemb_from_decay"}
    assert set(c.input) <= set(TRAIN_DEFAULTS) and set(c.eval_input) <= set(EVAL_DEFAULTS)

    # Model and hyperparameters.
    assert (c.model.pooling, c.model.num_classes, c.model.recipe) == (pooling, 1000, "supervised")
    expected_kwargs = {"gamma": r["gamma"]} if pooling == "simpool" else {}  # no beta in timm
    assert c.model.pooling_kwargs.to_dict() == expected_kwargs
    assert c.model.backbone_kwargs.get("drop_path_rate") == r["drop_path"]
    assert (c.input.name, c.input.split) == ("imagenet2012", "train")
    assert (c.eval_input.name, c.eval_input.split) == ("imagenet2012", "validation")
    assert c.input.batch_size == r["batch"] and c.total_epochs == 100
    assert (c.optim.name, c.optim.lr, c.optim.weight_decay) == (r["opt"], r["lr"], r["wd"])
    assert c.ema_decay == r["ema"] and c.label_smoothing == 0.1 and c.compute_dtype == "float32"
    if r["opt"] == "sgd":
        assert (c.optim.momentum, c.optim.nesterov) == (0.9, True)

    # The schedule the trainer builds: absolute lr (timm with --lr), 5 warmup epochs from the
    # warmup lr, cosine to 0 at epoch 100.
    steps_per_epoch, total, optim = schedule_steps(c, IMAGENET_TRAIN)
    assert steps_per_epoch == IMAGENET_TRAIN // r["batch"] and total == 100 * steps_per_epoch
    assert optim["warmup_steps"] == 5 * steps_per_epoch
    model = build_model(c.model)
    variables = abstract_init(model, 224)
    _, lr = make_optimizer(optim, total, variables["params"])
    assert float(lr(0)) == pytest.approx(r["warmup_lr"])
    assert float(lr(optim["warmup_steps"])) == pytest.approx(r["lr"])
    assert float(lr(total)) == pytest.approx(0.0, abs=1e-12)

    # Parameters: timm's model (+ SimPool), and the paper's Table 8 in millions.
    expected = backbone_reference(backbone, pooling, 1000)
    if pooling == "simpool":
        expected += simpool_count(WIDTHS[backbone])
    assert count(variables["params"]) == expected
    assert round(expected / 1e6, 1) == TABLE_8[arg]

    # Data: RRC 224 + flip + RandAugment (rand-m9-mstd0.5-inc1), mixup / cutmix with smoothed
    # one-hot targets where the recipe has them; eval resize to 224 / crop_pct + centre crop 224.
    train = op_settings(c.input.pp)
    names = ["decode", "rrc", "flip_lr", "randaug", "normalize"]
    assert [n for n, _ in train] == names + (["onehot"] if r["mixup"] else [])
    ops = dict(train)
    assert ops["rrc"]["size"] == 224 and ops["rrc"]["method"] == "bicubic"
    assert ops["rrc"]["scale"] == (0.08, 1.0)
    assert ops["rrc"]["ratio"] == pytest.approx((3 / 4, 4 / 3))
    assert ops["flip_lr"]["p"] == 0.5
    assert {k: ops["randaug"][k] for k in ("num_layers", "magnitude", "magnitude_std", "prob")} == \
        {"num_layers": 2, "magnitude": 9, "magnitude_std": 0.5, "prob": 0.5}
    assert stats(ops["normalize"]["mean"], ops["normalize"]["std"]) == r["norm"]
    if r["mixup"]:
        assert ops["onehot"]["num_classes"] == 1000 and ops["onehot"]["smoothing"] == 0.1
        mix = dict(op_settings(c.input.pp_batch))["mixup"]
        assert (mix["mixup_alpha"], mix["cutmix_alpha"]) == r["mixup"]
        assert (mix["prob"], mix["switch_prob"]) == (1.0, 0.5)
    else:
        assert c.input.pp_batch is None
    evals = op_settings(c.eval_input.pp)
    assert [n for n, _ in evals] == ["decode", "resize_small", "central_crop", "normalize"]
    ops = dict(evals)
    resize = ops["resize_small"]
    assert (resize["size"], resize["method"]) == (r["eval_resize"], "bicubic")
    assert ops["central_crop"]["size"] == 224
    assert stats(ops["normalize"]["mean"], ops["normalize"]["std"]) == r["norm"]


# --- DINO -------------------------------------------------------------------------------------


@pytest.mark.parametrize("arg", DINO_ARGS)
def test_dino_recipe(arg):
    backbone, pooling = arg.split(",")
    r = DINO_RECIPES[backbone]
    c = load(f"{DINO}:{arg}")
    assert c.is_locked and c.trainer == "dino" and c.image_size == 224
    reference = load("configs/fmnist_dino.py")  # same trainer, run end to end by CLI tests
    assert set(c) == set(reference) and set(c.model) == set(reference.model)
    assert set(c.dino) == set(reference.dino) and set(c.knn) == set(reference.knn)
    assert set(c.optim) <= {"name", "lr", "min_lr", "warmup_epochs", "weight_decay",
                            "weight_decay_end", "b1", "b2", "momentum"}
    assert set(c.input) <= set(TRAIN_DEFAULTS)
    assert set(c.knn.train) <= set(EVAL_DEFAULTS) and set(c.knn.test) <= set(EVAL_DEFAULTS)

    # Model: pooling, head, drop path of student and teacher.
    assert (c.model.pooling, c.model.recipe, c.model.head) == (pooling, "dino", "dino")
    assert c.model.pooling_kwargs.to_dict() == (r["pooling_kwargs"] if pooling == "simpool" else {})
    head = c.model.head_kwargs
    assert (head.out_dim, head.use_bn, head.norm_last_layer) == \
        (r["out_dim"], r["use_bn"], r["norm_last_layer"])
    assert (head.nlayers, head.hidden_dim, head.bottleneck_dim) == (3, 2048, 256)
    teacher = teacher_config(c)
    assert c.model.backbone_kwargs.get("drop_path_rate") == r["drop_path"][0]
    assert teacher["backbone_kwargs"].get("drop_path_rate") == r["drop_path"][1]

    # Hyperparameters and the schedules the trainer builds from them.
    assert (c.input.name, c.input.split) == ("imagenet2012", "train")
    assert c.input.batch_size == r["batch"]
    assert c.total_epochs == 100 and c.optim.name == r["opt"]
    d = c.dino
    assert (d.student_temp, d.warmup_teacher_temp, d.teacher_temp) == (0.1, 0.04, 0.07)
    assert (d.warmup_teacher_temp_epochs, d.center_momentum, d.momentum_teacher) == \
        (r["temp_epochs"], 0.9, 0.996)
    assert (d.clip_grad, d.freeze_last_layer_epochs) == (r["clip"], r["freeze"])
    if r["opt"] == "lars":
        assert c.optim.momentum == 0.9
    else:
        assert (c.optim.b1, c.optim.b2) == (0.9, 0.999)
    steps_per_epoch, total, optim = schedule_steps(c, IMAGENET_TRAIN)
    assert steps_per_epoch == IMAGENET_TRAIN // r["batch"] and total == 100 * steps_per_epoch
    assert optim["warmup_steps"] == 10 * steps_per_epoch
    schedules = dino_schedules(c, optim, total)
    lr, wd, momentum = schedules["lr"], schedules["wd"], schedules["momentum"]
    assert float(lr(0)) == 0.0
    assert float(lr(optim["warmup_steps"])) == pytest.approx(r["peak_lr"], rel=1e-6)
    assert float(lr(total)) == pytest.approx(r["min_lr"], rel=1e-5)
    assert (float(wd(0)), float(wd(total))) == pytest.approx(r["wd"], rel=1e-5)
    assert (float(momentum(0)), float(momentum(total))) == pytest.approx((0.996, 1.0), rel=1e-6)
    ramp = np.linspace(0.04, 0.07, r["temp_epochs"])  # DINO's teacher_temp_schedule
    for epoch in (0, r["temp_epochs"] // 2, r["temp_epochs"] - 1, r["temp_epochs"], 99):
        expected = ramp[epoch] if epoch < r["temp_epochs"] else 0.07
        got = teacher_temperature(jnp.asarray(epoch), d.warmup_teacher_temp, d.teacher_temp,
                                  d.warmup_teacher_temp_epochs)
        assert float(got) == pytest.approx(expected, rel=1e-6)

    # Parameters of student and teacher at 224 px; the student also takes 96 px local crops.
    student = build_model(c.model)
    variables = abstract_init(student, 224)
    d_model = WIDTHS[backbone]
    expected = (backbone_reference(backbone, pooling, 0)
                + dino_head_count(d_model, r["out_dim"], r["use_bn"], r["norm_last_layer"]))
    if pooling == "simpool":
        expected += simpool_count(d_model, beta=r["pooling_kwargs"].get("use_beta", False))
    assert count(variables["params"]) == expected
    teacher_variables = abstract_init(build_model(teacher), 224)
    assert jax.tree.map(lambda x: x.shape, teacher_variables) == \
        jax.tree.map(lambda x: x.shape, variables)
    local = jax.ShapeDtypeStruct((2, 96, 96, 3), jnp.float32)
    out, _ = jax.eval_shape(
        lambda v, x: student.apply(v, x, train=True, mutable=["batch_stats"],
                                   rngs={"dropout": jax.random.PRNGKey(0)}), variables, local)
    assert out["logits"].shape == (2, r["out_dim"]) and out["features"].shape == (2, d_model)

    # Data: 2 x 224 global + 6 x 96 local crops with the recipe's scales; k-NN as eval_knn.py.
    crops = op_settings(c.input.pp)
    assert [n for n, _ in crops] == ["decode", "dino_multicrop"]
    mc = dict(crops)["dino_multicrop"]
    assert (mc["global_size"], mc["local_size"], mc["n_local"]) == (224, 96, 6)
    assert (mc["global_scale"], mc["local_scale"]) == (r["global_scale"], r["local_scale"])
    assert stats(mc["mean"], mc["std"]) == IMAGENET_STATS
    assert (tuple(c.knn.ks), c.knn.temperature) == ((10, 20, 100, 200), 0.07)
    assert (c.knn.train.split, c.knn.test.split) == ("train", "validation")
    for split in (c.knn.train, c.knn.test):
        assert split.name == "imagenet2012"
        knn = op_settings(split.pp)
        assert [n for n, _ in knn] == ["decode", "resize_small", "central_crop", "normalize"]
        ops = dict(knn)
        assert (ops["resize_small"]["size"], ops["central_crop"]["size"]) == (256, 224)
        assert stats(ops["normalize"]["mean"], ops["normalize"]["std"]) == IMAGENET_STATS


# --- variants by override, documented commands, bad input --------------------------------------


@pytest.mark.parametrize("config,arg,overrides,variant", [
    (SUPERVISED, "vit_s,simpool", ["--config.model.backbone=vit_base"], "vit_b"),
    (SUPERVISED, "vit_s,simpool", ["--config.model.pooling_kwargs={}"], "no_gamma"),
    (DINO, "vit_s,simpool", ["--config.model.backbone=vit_base"], "vit_b"),
    (DINO, "vit_s,simpool", ["--config.model.pooling_kwargs={}"], "no_gamma"),
    (DINO, "resnet50,simpool", ["--config.model.pooling_kwargs={}"], "no_gamma"),
])
def test_overrides_reach_vit_b_and_no_gamma(config, arg, overrides, variant):
    c = load(f"{config}:{arg}", *overrides)
    backbone = "vit_b" if variant == "vit_b" else arg.split(",")[0]
    model = build_model(c.model)
    params = abstract_init(model, 224)["params"]
    if variant == "no_gamma":
        assert model.pooling_kwargs == {}  # SimPool's default: no γ, hence no β either
        assert "beta" not in params["pool"]
    d = WIDTHS[backbone]
    beta = variant == "vit_b" and config == DINO  # the DINO ViT keeps γ 1.25 + β
    expected = backbone_reference(backbone, "simpool", 1000 if config == SUPERVISED else 0)
    expected += simpool_count(d, beta=beta)
    if config == DINO:
        h = c.model.head_kwargs
        expected += dino_head_count(d, h.out_dim, h.use_bn, h.norm_last_layer)
    assert count(params) == expected


def test_vit_s_dino_simpool_is_the_dino_vit_s_simpool_recipe():
    """configs/vit_s_dino_simpool.py, the name issue #6 gives the run, is that recipe, overrides
    included."""
    alias = "configs/vit_s_dino_simpool.py"
    assert load(alias).to_dict() == load(f"{DINO}:vit_s,simpool").to_dict()
    c = load(alias, "--config.total_epochs=300", "--config.model.pooling_kwargs={}")
    assert c.is_locked and c.total_epochs == 300 and c.model.pooling_kwargs.to_dict() == {}
    assert [argv[1:] for argv in docstring_commands(alias)] == [
        ["--workdir=workdirs/dino_vit_s_simpool"],
        ["--workdir=workdirs/dino_vit_s_nogamma", "--config.model.pooling_kwargs={}"],
        ["--workdir=workdirs/dino_vit_s_300ep", "--config.total_epochs=300"]]


@pytest.mark.parametrize("config", [SUPERVISED, DINO])
def test_every_documented_command_loads_and_builds(config):
    commands = docstring_commands(config)
    assert len(commands) >= 9
    for argv in commands:
        spec = argv[0].removeprefix("--config=")
        overrides = [a for a in argv[1:] if not a.startswith("--workdir=")]
        c = load(spec, *overrides)
        build_model(c.model)
        if c.trainer == "dino":
            build_model(teacher_config(c))


@pytest.mark.parametrize("config", [SUPERVISED, DINO])
def test_unknown_override_and_bad_argument_are_errors(config):
    with pytest.raises(AttributeError, match="learning_rate"):
        load(f"{config}:vit_s,simpool", "--config.optim.learning_rate=1")
    with pytest.raises(AttributeError, match="gammma"):
        load(f"{config}:resnet50,simpool", "--config.model.pooling_kwargs.gammma=2")
    with pytest.raises(flags.IllegalFlagValueError, match="resnet50,simpool"):  # lists the choices
        load(f"{config}:resnet50,max")
