"""train.py end to end on tiny Fashion-MNIST runs: exact resume, crashes, preemption, NaN, bad input."""

import json
import signal
import subprocess
import time

import numpy as np
import pytest
from train_cli import (
    DINO,
    ROOT,
    SUPERVISED,
    assert_trees_equal,
    complete_steps,
    environment,
    logged,
    run_train,
    saved_params,
    train_command,
)
from markers import needs_fashion_mnist

pytestmark = needs_fashion_mnist


@pytest.mark.parametrize("config", [SUPERVISED, DINO])
def test_exact_resume_across_a_process_restart(tmp_path, config):
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_train(straight, "--config.total_steps=6", "--config.checkpoint_every=3", config=config)
    first = run_train(split, "--config.total_steps=6", "--config.checkpoint_every=3",
                      "--config.stop_after_steps=3", config=config)
    assert complete_steps(split) == [3]
    second = run_train(split, "--config.total_steps=6", "--config.checkpoint_every=3", config=config)
    assert "resuming from" in second.stdout and "resuming from" not in first.stdout
    assert logged(split) == logged(straight)  # identical logged losses, steps 1..6
    assert_trees_equal(saved_params(split, 6), saved_params(straight, 6))  # bit-identical


def test_resuming_with_another_model_names_the_differences_and_keeps_config_json(tmp_path):
    workdir = tmp_path / "run"
    run_train(workdir, "--config.total_steps=2")
    result = run_train(workdir, "--config.total_steps=4", "--config.model.backbone_kwargs.width=48",
                       check=False)
    assert result.returncode == 1
    assert f"checkpoint {workdir / 'checkpoints' / '2'} does not match" in result.stderr
    first = result.stderr.split("differences):\n")[1].splitlines()[0].strip()
    assert first.startswith("params/") and "checkpoint (32" in first and "config (48" in first
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["model"]["backbone_kwargs"]["width"] == 32  # still the checkpoint's config


def test_kill_during_checkpoint_write_resumes_from_last_complete(tmp_path):
    workdir = tmp_path / "run"
    process = subprocess.Popen(train_command(workdir, "--config.total_steps=400",
                                             "--config.checkpoint_every=1"),
                               cwd=ROOT, env=environment(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    try:
        while time.time() < deadline:  # kill -9 while a step's checkpoint is being written
            checkpoints = workdir / "checkpoints"
            if checkpoints.is_dir() and any("tmp" in p.name for p in checkpoints.iterdir()):
                process.send_signal(signal.SIGKILL)
                break
            time.sleep(0.005)
        else:
            pytest.fail("never saw a checkpoint being written")
        process.wait(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL
    last = complete_steps(workdir)[-1] if complete_steps(workdir) else None
    result = run_train(workdir, "--config.total_steps=400", "--config.checkpoint_every=1",
                       "--config.stop_after_steps=2")
    expected = f"resuming from {workdir / 'checkpoints'}/{last}" if last else "resuming from"
    assert (expected in result.stdout) if last else ("resuming" not in result.stdout)


def test_sigterm_saves_a_checkpoint_and_exits_zero(tmp_path):
    workdir = tmp_path / "run"
    process = subprocess.Popen(train_command(workdir, "--config.total_steps=100000",
                                             "--config.checkpoint_every=100000"),
                               cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True)
    try:
        for line in process.stdout:  # wait until training runs
            if line.startswith("step 3/"):
                break
        process.send_signal(signal.SIGTERM)
        out, _ = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 0, out
    assert "received SIGTERM" in out
    steps = complete_steps(workdir)
    assert steps and steps[-1] >= 3


def test_nan_loss_stops_with_the_step_and_keeps_the_last_checkpoint(tmp_path):
    workdir = tmp_path / "run"
    result = run_train(workdir, "--config.total_steps=50", "--config.checkpoint_every=2",
                       "--config.optim.lr=1e30", "--config.optim.warmup_epochs=0",
                       "--config.optim.clip_grad_norm=0", check=False)
    assert result.returncode == 1
    assert "non-finite loss" in result.stderr and "at step" in result.stderr
    steps = complete_steps(workdir)
    bad = int(result.stderr.split("at step ")[1].split(";")[0])
    assert all(s < bad for s in steps)
    if steps:
        import jax

        assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved_params(workdir, steps[-1])))


@pytest.mark.parametrize("overrides,message", [
    (["--config.optim.learning_rate=1"], "learning_rate"),
    (["--config.input.name=mnist_typo"], "mnist_typo"),
    (["--config.input.split=validation"], "validation"),
    (["--config.model.num_classes=5"], "has 10 classes but the model has 5 outputs"),
])
def test_bad_config_is_a_clear_error_and_writes_no_checkpoint(tmp_path, overrides, message):
    result = run_train(tmp_path / "run", "--config.total_steps=2", *overrides, check=False)
    assert result.returncode != 0 and message in result.stderr
    assert not (tmp_path / "run" / "checkpoints").exists() or not complete_steps(tmp_path / "run")


@pytest.mark.parametrize("config,devices,overrides,message", [
    (SUPERVISED, 8, ["--config.eval_input.batch_size=500"], "not divisible by the 8 devices"),
    (DINO, 1, ["--config.knn.test.split=validation"], "has no split 'validation'"),
    (DINO, 1, ["--config.knn.train.pp=decode(3)|resize_typo(28)"], "resize_typo"),
])
def test_bad_eval_input_fails_at_start_up(tmp_path, config, devices, overrides, message):
    """Found before training, not after it at the final evaluation."""
    result = run_train(tmp_path / "run", "--config.total_steps=2", *overrides, devices=devices,
                       check=False, config=config)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]
    assert "step 1/" not in result.stdout


def test_fsdp_mesh_from_the_command_line_trains_as_the_data_mesh(tmp_path):
    """--config.mesh is a tuple field, so the command line can set it; fsdp-sharded parameters
    and optimizer state give the losses of the pure data-parallel run."""
    fsdp = "--config.mesh=(('data', 4), ('fsdp', 2))"
    run_train(tmp_path / "data", "--config.total_steps=3", devices=8)
    run_train(tmp_path / "fsdp", "--config.total_steps=3", fsdp, devices=8)
    saved = json.loads((tmp_path / "fsdp" / "config.json").read_text())
    assert saved["mesh"] == [["data", 4], ["fsdp", 2]]
    got, want = logged(tmp_path / "fsdp"), logged(tmp_path / "data")
    assert list(got) == list(want) == [1, 2, 3]
    np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-5)
    result = run_train(tmp_path / "bad", "--config.total_steps=3", fsdp, check=False)
    assert result.returncode == 1 and "does not fit 1 devices" in result.stderr
    assert "Traceback" not in result.stderr


def test_unwritable_workdir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = run_train(blocker / "run", "--config.total_steps=2", check=False)
    assert result.returncode != 0 and "cannot write to workdir" in result.stderr
    assert blocker.read_text() == "not a directory"
