"""Several processes on localhost (jax.distributed over 127.0.0.1, gloo CPU collectives).

Two train.py processes train as one single-process run of the same global batches on the same
number of devices. Each process reads its own shard of the split with its own shuffle
(simpool_jax/data/pipeline.py), so the global batch of a step is the concatenation of the
processes' batches; the single-process reference is fed exactly that: the processes' streams
simulated in this process and concatenated in process order. Also: feature extraction for k-NN /
linear probes gathers every process's examples. Gloo missing or broken makes the runs fail, and
so the tests.
"""

import dataclasses
import json
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from absl import flags
from ml_collections import config_flags
from train_cli import (
    DINO,
    ROOT,
    SUPERVISED,
    TINY,
    complete_steps,
    environment,
    logged,
    saved_params,
    train_command,
)
from markers import needs_fashion_mnist

PROCESSES, DEVICES_PER_PROCESS = 2, 4  # conftest gives this test process 8 devices as well
RUN = ("--config.total_steps=3", "--config.checkpoint_every=2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parsed_config(*overrides: str, config: str = SUPERVISED):
    """The config train.py builds from `train_command`'s flags."""
    argv = ["train.py", f"--config={ROOT / config}", *TINY[config], *overrides]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                    sys_argv=argv)
    values(argv)
    return values.config


def run_processes(command: list[str], logs: Path, devices: int, timeout: int = 400,
                  signal_when: tuple[int, signal.Signals, str] | None = None) -> list[str]:
    """Run `command` as the processes of one jax.distributed job on 127.0.0.1 to the end; their
    outputs, or an error with every output's tail. One failing stops the others at once (they
    would wait for it in a collective). `signal_when` = (i, signal, text): send the signal to
    process i alone once process 0's output shows `text`."""
    address = f"127.0.0.1:{free_port()}"
    files = [logs / f"process{i}.log" for i in range(PROCESSES)]
    procs = []
    for i, file in enumerate(files):
        with file.open("w") as out:
            procs.append(subprocess.Popen(
                command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                env=dict(environment(devices), SIMPOOL_DISTRIBUTED="1",
                         SIMPOOL_COORDINATOR_ADDRESS=address, SIMPOOL_NUM_PROCESSES=str(PROCESSES),
                         SIMPOOL_PROCESS_ID=str(i))))
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            if any(p.returncode for p in procs):
                break
            if signal_when and signal_when[2] in files[0].read_text():
                procs[signal_when[0]].send_signal(signal_when[1])
                signal_when = None
            time.sleep(0.5)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    outputs = [file.read_text() for file in files]
    if any(proc.returncode for proc in procs):
        raise AssertionError("\n".join(f"process {i} exit {proc.returncode}:\n{out[-3000:]}"
                                       for i, (proc, out) in enumerate(zip(procs, outputs))))
    return outputs


def run_single_process_reference(workdir: Path) -> None:
    """train.py's job and loop in this process, fed the processes' concatenated batches."""
    import jax

    from simpool_jax.data import make_train_iterator
    from simpool_jax.parallel import make_mesh
    from simpool_jax.train import loop
    from simpool_jax.train.supervised_trainer import build_job

    assert jax.process_count() == 1 and jax.device_count() == PROCESSES * DEVICES_PER_PROCESS
    config = parsed_config(*RUN)
    mesh = make_mesh(tuple(tuple(axis) for axis in config.mesh))

    def concatenated_batches(start_step: int):
        settings = {**config.input, "seed": config.seed, "start_step": start_step}
        streams = [make_train_iterator(settings, mesh, process_index=i, process_count=PROCESSES)
                   for i in range(PROCESSES)]
        for parts in zip(*(stream.dataset.as_numpy_iterator() for stream in streams)):
            yield streams[0].to_global({k: np.concatenate([p[k] for p in parts]) for k in parts[0]})

    job = dataclasses.replace(build_job(config, mesh, workdir), train_batches=concatenated_batches)
    loop.run(job, config, workdir)


def flatten(tree) -> dict[str, np.ndarray]:
    import jax

    return {jax.tree_util.keystr(path): np.asarray(x)
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}


def test_distributed_settings_from_the_environment():
    from simpool_jax.parallel import distributed_settings

    assert distributed_settings({}) == {}  # all left to JAX's cluster detection
    given = {"SIMPOOL_COORDINATOR_ADDRESS": "10.0.0.1:1234", "SIMPOOL_NUM_PROCESSES": "4",
             "SIMPOOL_PROCESS_ID": "3"}
    assert distributed_settings(given) == {"coordinator_address": "10.0.0.1:1234",
                                           "num_processes": 4, "process_id": 3}
    with pytest.raises(ValueError, match="SIMPOOL_PROCESS_ID must be a non-negative integer"):
        distributed_settings({"SIMPOOL_PROCESS_ID": "one"})
    with pytest.raises(ValueError, match="SIMPOOL_COORDINATOR_ADDRESS must be host:port"):
        distributed_settings({"SIMPOOL_COORDINATOR_ADDRESS": "10.0.0.1"})


def test_two_processes_extract_all_features(tmp_path):
    """k-NN / linear-probe feature extraction sees every process's examples (tiny: no training)."""
    worker = Path(__file__).with_name("two_process_extract.py")
    outputs = run_processes([sys.executable, str(worker)], tmp_path, devices=2, timeout=200)
    for i, out in enumerate(outputs):
        assert f"process {i}: 26 examples" in out, out


@needs_fashion_mnist
def test_two_processes_train_as_one(tmp_path):
    reference, distributed = tmp_path / "reference", tmp_path / "distributed"
    run_single_process_reference(reference)  # first: it also prepares the dataset for the processes
    outputs = run_processes(train_command(distributed, *RUN), tmp_path, DEVICES_PER_PROCESS)
    devices = PROCESSES * DEVICES_PER_PROCESS
    for i, out in enumerate(outputs):
        assert f"process {i} of {PROCESSES}: {DEVICES_PER_PROCESS} of {devices} devices" in out
    lines = (distributed / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4, lines  # steps 1-3 and the final eval, written by process 0 only
    for key in ("loss", "grad_norm", "train_accuracy"):
        got, want = logged(distributed, key), logged(reference, key)
        assert list(got) == list(want) == [1, 2, 3], (key, got, want)
        np.testing.assert_allclose(list(got.values()), list(want.values()), rtol=1e-5, err_msg=key)
    for step in (2, 3):  # a mid-run and the final checkpoint, both written by the two processes
        got = flatten(saved_params(distributed, step))
        want = flatten(saved_params(reference, step))
        assert got.keys() == want.keys()
        for path, x in got.items():  # measured: at most 1.2e-7 apart
            np.testing.assert_allclose(x, want[path], rtol=1e-5, atol=1e-6,
                                       err_msg=f"step {step} {path}")
    # Top-k of a 3-step model has near-ties that 1e-7 parameter differences may flip: one example.
    one_example = 100 / parsed_config().eval_input.limit
    for key in ("eval_top1", "eval_top5"):
        got, want = logged(distributed, key), logged(reference, key)
        assert list(got) == list(want) == [3], (key, got, want)
        np.testing.assert_allclose(got[3], want[3], atol=one_example * 1.001, rtol=0, err_msg=key)


ONE_KNN_BATCH = ("--config.knn.train.batch_size=512", "--config.knn.test.batch_size=512")


@needs_fashion_mnist
def test_two_dino_processes_stop_together_resume_and_evaluate(tmp_path):
    """Ctrl-C (SIGINT) to one process: both stop at the same step, save it and exit 0 (one stopping
    alone would leave the other waiting in a collective, and nothing would be saved). The loop
    passes SIGINT on as a SIGTERM to its own process, so this is also the path of a scheduler's
    SIGTERM into JAX's preemption service (a one-off run with SIGTERM itself passed too; removing
    the pass-on, or the loop's agreement, makes both processes hang). Resumed, they finish
    and evaluate as one: the teacher's k-NN, foreground IoU and attention figure of the final state
    equal this process's single-process evaluation of the same checkpoint. The k-NN splits fit one
    global batch, so SimPool's batch minimum sees the same images in both."""
    from simpool_jax.checkpoint import restore_local
    from simpool_jax.model import build_model
    from simpool_jax.parallel import make_mesh
    from simpool_jax.train.dino_trainer import knn_evaluation, teacher_config

    workdir, reference = tmp_path / "dino", tmp_path / "reference"
    endless = ("--config.total_steps=100000", "--config.checkpoint_every=100000")
    outputs = run_processes(train_command(workdir, *endless, *ONE_KNN_BATCH, config=DINO), tmp_path,
                            DEVICES_PER_PROCESS, signal_when=(1, signal.SIGINT, "step 3/"))
    stops = [re.findall(r"stopping at step (\d+)", out) for out in outputs]
    assert len(stops[0]) == 1 and stops[0] == stops[1], stops
    stop = int(stops[0][0])
    assert stop >= 3 and complete_steps(workdir) == [stop]
    assert "received SIGINT" in outputs[1] and "received SIGINT" not in outputs[0]
    final = stop + 1  # a shorter run than the stopped one: only the mechanics matter here
    outputs = run_processes(train_command(workdir, f"--config.total_steps={final}", *ONE_KNN_BATCH,
                                          config=DINO), tmp_path, DEVICES_PER_PROCESS)
    assert all(f"resuming from {workdir / 'checkpoints'}/{stop}" in out for out in outputs)
    got = json.loads((workdir / "knn.json").read_text())

    config = parsed_config(f"--config.total_steps={final}", *ONE_KNN_BATCH, config=DINO)
    saved = restore_local(workdir / "checkpoints" / str(final) / "default")
    teacher = build_model(teacher_config(config))
    mesh = make_mesh(tuple(tuple(axis) for axis in config.mesh))
    reference.mkdir()
    knn_evaluation(config, mesh, teacher, reference)(saved)
    want = json.loads((reference / "knn.json").read_text())
    assert got["step"] == want["step"] == final
    assert (got["train_examples"], got["test_examples"]) == (256, 128)
    assert (want["train_examples"], want["test_examples"]) == (256, 128)
    one_example = 100 / 128
    for k, values in want["knn"].items():
        for metric, value in values.items():
            np.testing.assert_allclose(got["knn"][k][metric], value, atol=one_example * 1.001,
                                       rtol=0, err_msg=f"k {k} {metric}")
    np.testing.assert_allclose(got["attention_iou"], want["attention_iou"], rtol=1e-5)
    import matplotlib.image

    figure, expected = (matplotlib.image.imread(d / "attention.png") for d in (workdir, reference))
    assert figure.shape == expected.shape
    assert np.abs(figure - expected).mean() < 1e-3
