"""Linear probe (DINO's eval_linear.py protocol): the optimiser and schedule against PyTorch's, the
training core on synthetic features with known answers, the frozen backbone, masked evaluation, the
n_last_blocks representation, and the CLI end to end on a tiny model and Fashion-MNIST."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from simpool_jax.checkpoint import save_model_dir
from simpool_jax.evaluate.linear import (
    epoch_cosine,
    evaluate_head,
    init_head,
    make_eval_step,
    make_optimizer,
    make_train_step,
    train_probe,
)
from simpool_jax.evaluate.representation import representation
from simpool_jax.model import build_model
from simpool_jax.parallel import global_batch, make_mesh
from markers import needs_fashion_mnist



@pytest.fixture(scope="module")
def mesh():
    return make_mesh((("data", -1),))


def identity(variables, images):
    return images


def train_stream(mesh, x, y, batch, seed=0):
    """Endless shuffled global batches, a new permutation every pass."""
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(x))
        for start in range(0, len(x) - batch + 1, batch):
            idx = order[start:start + batch]
            yield global_batch(mesh, {"image": x[idx], "label": y[idx]})


def eval_stream(mesh, x, y, batch):
    """One pass, the last batch padded with zero examples marked mask=False."""
    n = math.ceil(len(x) / batch) * batch
    pad = n - len(x)
    xp = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
    yp = np.concatenate([y, np.zeros(pad, y.dtype)])
    mask = np.arange(n) < len(x)
    return [global_batch(mesh, {"image": xp[i:i + batch], "label": yp[i:i + batch],
                                "mask": mask[i:i + batch]}) for i in range(0, n, batch)]


def test_init_is_normal_001_weights_and_zero_bias():
    head = init_head(jax.random.PRNGKey(0), 400, 500)
    kernel = np.asarray(head["kernel"], np.float64)
    assert kernel.shape == (400, 500) and head["bias"].shape == (500,)
    # 200,000 draws: standard error of the std 1.6e-5, of the mean 2.2e-5.
    assert kernel.std() == pytest.approx(0.01, abs=1e-4)
    assert abs(kernel.mean()) < 1e-4
    assert not np.any(np.asarray(head["bias"]))


def test_schedule_is_torch_cosine_annealing_stepped_per_epoch():
    base, epochs, steps_per_epoch = 0.3, 5, 3
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0)
    expected = []
    for _ in range(epochs):
        expected += [opt.param_groups[0]["lr"]] * steps_per_epoch
        opt.step()
        scheduler.step()
    lr = epoch_cosine(base, epochs, steps_per_epoch)
    ours = [float(lr(step)) for step in range(epochs * steps_per_epoch)]
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-9)
    assert ours[0] == pytest.approx(base)  # closed form: base / 2 * (1 + cos(pi * e / E))
    assert ours[-1] == pytest.approx(base / 2 * (1 + math.cos(math.pi * 4 / 5)))


def test_steps_match_torch_sgd_momentum_linear_classifier(mesh):
    """Five steps over two epochs (the lr changes between them) against eval_linear.py's loop:
    nn.Linear, SGD(momentum 0.9, weight_decay 0), CrossEntropyLoss, CosineAnnealingLR."""
    dim, classes, batch, steps_per_epoch, epochs, base = 12, 5, 16, 3, 2, 0.5
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((5, batch, dim)).astype(np.float32)
    ys = rng.integers(0, classes, (5, batch))
    schedule = epoch_cosine(base, epochs, steps_per_epoch)
    tx = make_optimizer(schedule)
    params = init_head(jax.random.PRNGKey(1), dim, classes)
    head = {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    step = jax.jit(make_train_step(identity, tx, schedule))

    linear = torch.nn.Linear(dim, classes)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.asarray(params["kernel"]).T.copy()))
        linear.bias.zero_()
    opt = torch.optim.SGD(linear.parameters(), lr=base, momentum=0.9, weight_decay=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=0)
    for i in range(5):
        batch = global_batch(mesh, {"image": xs[i], "label": ys[i].astype(np.int32)})
        head, metrics = step(head, {}, batch)
        loss = torch.nn.CrossEntropyLoss()(linear(torch.from_numpy(xs[i])), torch.from_numpy(ys[i]))
        opt.zero_grad()
        loss.backward()
        assert float(metrics["loss"]) == pytest.approx(loss.item(), rel=1e-5)
        assert float(metrics["lr"]) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-6)
        opt.step()
        if (i + 1) % steps_per_epoch == 0:
            scheduler.step()
    torch_kernel = linear.weight.detach().numpy().T
    np.testing.assert_allclose(head["params"]["kernel"], torch_kernel, atol=2e-6)
    np.testing.assert_allclose(head["params"]["bias"], linear.bias.detach().numpy(), atol=2e-6)


def _probe(mesh, represent, backbone, train, test, *, classes, epochs, lr, batch=64):
    steps = len(train[0]) // batch
    return train_probe(represent, backbone, mesh, train_stream(mesh, *train, batch),
                       lambda: eval_stream(mesh, *test, batch), num_classes=classes,
                       epochs=epochs, steps_per_epoch=steps, lr=lr)


def _clusters(rng, n, classes):
    """Class c at 4 e_c plus noise in [-0.5, 0.5]^d: the linear rule argmax_j x_j is always right
    (4 - 0.5 > 0.5), so the Bayes accuracy is 100 %."""
    y = rng.integers(0, classes, n).astype(np.int32)
    x = 4.0 * np.eye(classes)[y] + rng.uniform(-0.5, 0.5, (n, classes))
    return x.astype(np.float32), y


def test_separable_clusters_through_a_frozen_random_projection_reach_100(mesh):
    rng = np.random.default_rng(0)
    classes = 10
    backbone = {"proj": rng.standard_normal((classes, 24)).astype(np.float32) / 3}  # rank 10
    before = np.array(backbone["proj"])
    result = _probe(mesh, lambda v, x: x @ v["proj"], backbone, _clusters(rng, 1280, classes),
                    _clusters(rng, 1000, classes), classes=classes, epochs=3, lr=0.05)
    assert result.best_top1 == 100.0 and result.best_top5 == 100.0
    assert result.feature_dim == 24 and len(result.history) == 3
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    np.testing.assert_array_equal(backbone["proj"], before)


def test_two_gaussians_reach_the_bayes_accuracy(mesh):
    """N(+mu, I) vs N(-mu, I) with |mu| = 1: the best rule is linear, accuracy Phi(1) = 84.13 %."""
    rng = np.random.default_rng(1)
    mu = np.array([0.6, -0.8, 0.0, 0.0], np.float32)

    def sample(n):
        y = rng.integers(0, 2, n).astype(np.int32)
        return ((2 * y - 1)[:, None] * mu + rng.standard_normal((n, 4))).astype(np.float32), y

    result = _probe(mesh, identity, {}, sample(3200), sample(4000), classes=2, epochs=3, lr=0.05)
    bayes = 100 * 0.5 * (1 + math.erf(1 / math.sqrt(2)))
    assert abs(result.best_top1 - bayes) < 2.5  # 4 standard errors of 4000 test draws (0.58 %)


def test_random_labels_stay_at_chance(mesh):
    rng = np.random.default_rng(2)
    classes = 10

    def sample(n):
        return (rng.standard_normal((n, 32)).astype(np.float32),
                rng.integers(0, classes, n).astype(np.int32))

    result = _probe(mesh, identity, {}, sample(640), sample(2000), classes=classes, epochs=3,
                    lr=0.05)
    # Chance is 10 %; one standard error of 2000 draws is 0.67 %, the best of 3 epochs adds < 2.
    assert 10 - 4 < result.best_top1 < 10 + 5
    assert 50 - 6 < result.best_top5 < 50 + 7


def test_padded_eval_examples_do_not_count(mesh):
    classes = 6
    params = {"kernel": jnp.eye(classes), "bias": jnp.zeros(classes)}  # scores = the inputs
    rng = np.random.default_rng(3)
    x = np.stack([rng.permutation(classes) for _ in range(16)]).astype(np.float32)
    ranking = np.argsort(-x, axis=1)
    y = ranking[:, 0].astype(np.int32)  # every row right...
    y[[0, 3, 6]] = ranking[[0, 3, 6], 5]  # ...but 3 of the 8 real ones: wrong, outside the top 5
    mask = np.arange(16) < 8
    batch = global_batch(mesh, {"image": x, "label": y, "mask": mask})
    top1, top5, count = evaluate_head(jax.jit(make_eval_step(identity)), params, {}, [batch])
    assert count == 8
    assert top1 == pytest.approx(100 * 5 / 8) and top5 == pytest.approx(100 * 5 / 8)


def _tiny(pooling, depth=1, recipe="dino", **pool_kwargs):
    return dict(backbone="vit_tiny", pooling=pooling, pooling_kwargs=pool_kwargs, recipe=recipe,
                backbone_kwargs=dict(width=16, depth=depth, num_heads=2, patch_size=7,
                                     posemb_grid=(4, 4)))


def test_backbone_is_frozen_and_runs_in_eval_mode(mesh):
    """A ResNet with non-trivial BatchNorm statistics: its variables stay bit-identical, and the
    first loss is the cross-entropy of the eval-mode features (running statistics)."""
    model = build_model(dict(backbone="resnet18", pooling="gap", recipe="supervised",
                             backbone_kwargs=dict(stage_sizes=(1,), width=8)))
    images = np.random.default_rng(4).standard_normal((16, 28, 28, 3)).astype(np.float32)
    variables = jax.jit(lambda rng: jax.tree.map(  # non-trivial running statistics too
        lambda v: v + 0.3 * jnp.sin(jnp.arange(v.size).reshape(v.shape)),
        model.init(rng, images)))(jax.random.PRNGKey(0))
    before = jax.tree.map(np.array, variables)
    labels = np.arange(16) % 4
    schedule = epoch_cosine(0.1, 2, 2)
    tx = make_optimizer(schedule)
    params = init_head(jax.random.PRNGKey(1), 8, 4)
    head = {"params": params, "opt": tx.init(params), "step": jnp.zeros((), jnp.int32)}
    step = jax.jit(make_train_step(representation(model), tx, schedule))
    batch = global_batch(mesh, {"image": images, "label": labels})
    losses = []
    for _ in range(3):
        head, metrics = step(head, variables, batch)
        losses.append(float(metrics["loss"]))
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(variables), before)
    features = np.asarray(jax.jit(model.apply)(before, images)["features"], np.float64)  # eval mode
    logits = features @ np.asarray(params["kernel"], np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert losses[0] == pytest.approx(-logp[np.arange(16), labels].mean(), rel=1e-4)
    assert np.abs(np.asarray(head["params"]["kernel"]) - params["kernel"]).max() > 1e-3  # trained


def test_n_last_blocks_concatenates_final_norm_cls_of_the_last_blocks():
    """Block i's normalised CLS is the feature of the same ViT cut after block i."""
    model = build_model(_tiny("cls", depth=2))
    images = np.random.default_rng(5).standard_normal((3, 28, 28, 3)).astype(np.float32)
    variables = jax.jit(model.init)(jax.random.PRNGKey(0), images)
    features = jax.jit(model.apply)(variables, images)["features"]
    both = jax.jit(representation(model, 2))(variables, images)
    assert both.shape == (3, 32)
    np.testing.assert_allclose(both[:, 16:], features, atol=1e-6)
    cut = {"params": {**variables["params"], "backbone": {
        k: v for k, v in variables["params"]["backbone"].items() if k != "blocks_1"}}}
    first = jax.jit(build_model(_tiny("cls", depth=1)).apply)(cut, images)["features"]
    np.testing.assert_allclose(both[:, :16], first, atol=1e-6)
    with pytest.raises(ValueError, match="exceeds"):
        jax.eval_shape(representation(model, 3), variables, images)
    with pytest.raises(ValueError, match="CLS-token ViT"):
        representation(build_model(_tiny("simpool", gamma=1.25)), 2)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    config = _tiny("simpool", gamma=1.25, use_beta=True)
    variables = jax.jit(build_model(config).init)(jax.random.PRNGKey(0), jnp.zeros((2, 28, 28, 3)))
    return save_model_dir(tmp_path_factory.mktemp("probe") / "model", config, variables)


@needs_fashion_mnist
def test_cli_end_to_end_on_fashion_mnist(tmp_path, model_dir, capsys):
    from simpool_jax.checkpoint import load_model
    from simpool_jax.data import make_eval_iterator
    from simpool_jax.evaluate.extract import extract_features
    from simpool_jax.evaluate.linear_probe import main

    data_dir, workdir = str(tmp_path / "tfds"), tmp_path / "probe"
    rc = main(["--checkpoint", str(model_dir), "--dataset", "fashion_mnist", "--limit", "200",
               "--epochs", "2", "--batch-size", "32", "--steps-per-epoch", "3",
               "--data-dir", data_dir, "--workdir", str(workdir)])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "epoch 1/2  loss" in out and "epoch 2/2" in out and "best val top-1" in out
    results = json.loads((workdir / "results.json").read_text())
    history = results["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert results["best_top1"] == max(h["top1"] for h in history)
    assert history[results["best_epoch"] - 1]["top1"] == results["best_top1"]
    settings = results["settings"]
    assert settings["lr"] == pytest.approx(0.001 * 32 / 256)
    assert history[1]["lr"] == pytest.approx(settings["lr"] / 2)  # cos(pi / 2): half-way
    assert settings["eval_examples"] == 200
    assert (settings["num_classes"], settings["feature_dim"]) == (10, 16)
    assert "rrc(28" in settings["train_pp"] and "flip_lr" in settings["train_pp"]

    # The saved best head, scored independently on extracted eval features (200 = 6 x 32 + 8:
    # the last batch is padded, and its padding must not count).
    head = np.load(workdir / "head.npz")
    model, variables, _ = load_model(model_dir)
    forward = jax.jit(lambda x: model.apply(variables, x)["features"])
    batches = make_eval_iterator(dict(name="fashion_mnist", split="test", batch_size=32,
                                      pp=settings["eval_pp"], data_dir=data_dir, limit=200),
                                 make_mesh((("data", -1),)))
    features, labels = extract_features(forward, batches)
    assert len(labels) == 200
    predictions = np.argmax(features @ head["kernel"] + head["bias"], axis=1)
    assert 100 * np.mean(predictions == labels) == pytest.approx(results["best_top1"])


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "/nonexistent/model.pth"], "does not exist"),
    (["--dataset", "folder:/nonexistent/images"], "does not exist"),
    (["--dataset", "no_such_dataset_xyz"], "unknown dataset"),
    (["--n-last-blocks", "2"], "CLS-token ViT"),
    (["--out", "/nonexistent/dir/results.json"], "does not exist"),
])
def test_cli_bad_input_is_a_clear_error(model_dir, capsys, args, message):
    from simpool_jax.evaluate.linear_probe import main

    argv = {"--checkpoint": str(model_dir), "--dataset": "fashion_mnist"}
    argv.update(zip(args[::2], args[1::2]))
    assert main([x for kv in argv.items() for x in kv]) == 1
    assert message in capsys.readouterr().err


def test_cli_rejects_a_bad_lr(capsys):
    from simpool_jax.evaluate.linear_probe import main

    with pytest.raises(SystemExit):
        main(["--checkpoint", "x", "--dataset", "fashion_mnist", "--lr", "fast"])
    assert "--lr must be 'auto' or a number" in capsys.readouterr().err
