"""The training loop shared by the trainers: start-up order, steps, logging, checkpoints,
evaluation, preemption and non-finite guards, and the job's warnings on the logged metrics.

Start-up: resume from the workdir's latest checkpoint if there is one, else `config.init_from`
(a model directory or an official .pth, through the importer), else from scratch. SIGTERM /
SIGINT: save a checkpoint at the current step, wait for the write, return normally (exit 0); with
several processes, at the first step all of them reach after any one was signalled. A
non-finite loss or gradient norm stops training with the step named; the last checkpoint
written before it stays the latest (we never save a state after a bad step).
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
from jax.experimental import multihost_utils

from simpool_jax.checkpoint import TrainCheckpoints, load_model
from simpool_jax.train.metrics_log import MetricsLog
from simpool_jax.train.state import load_pretrained


class NonFiniteError(RuntimeError):
    """The loss or gradient norm became NaN / inf."""


@dataclass
class Job:
    """What a trainer hands the loop."""

    state: dict
    shardings: Any
    step_fn: Callable  # jitted (state, global batch, rng) -> (state, metrics)
    train_batches: Callable[[int], Iterator[dict]]  # start step -> global batches (jax.Arrays)
    total_steps: int
    steps_per_epoch: int
    global_batch_size: int
    evaluate: Callable[[dict], dict] | None = None  # state -> scalar metrics
    # (step, logged training metrics) -> {kind: message} of warnings due now (e.g. DINO collapse)
    monitor: Callable[[int, dict], dict[str, str]] | None = None


class _Preemption:
    """SIGTERM / SIGINT -> the step at which the loop stops (`should_stop`), one for all processes.

    One process: a Python handler sets a flag the loop reads between steps. Several processes
    (jax.distributed): a process that stopped alone would leave the others waiting for it in the
    next step's collectives, and none would save. JAX's preemption sync service already owns
    SIGTERM there (`jax.distributed.initialize` installs its handler; a Python one would replace
    it): once any process is signalled, `reached_preemption_sync_point` turns true at the same step
    in all of them. SIGINT (Ctrl-C) is passed on to it as a SIGTERM to this process.
    """

    def __init__(self):
        self.synced = jax.process_count() > 1 and jax.config.jax_enable_preemption_service
        self.requested = False
        self._previous = {}

    def __enter__(self):
        signals = (signal.SIGINT,) if self.synced else (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.synced:
            print(f"received {name}: all processes will stop at a common step and save a "
                  "checkpoint", flush=True)
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            print(f"received {name}: saving a checkpoint and stopping", flush=True)
            self.requested = True

    def should_stop(self, step: int) -> bool:
        """Whether to stop before training past `step`; every process calls it at every step."""
        if self.synced:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _abstract(state: dict, shardings: Any) -> Any:
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                        state, shardings)


def start_state(job: Job, checkpoints: TrainCheckpoints, config: Any) -> dict:
    """Resume > init_from > scratch (see module docstring)."""
    latest = checkpoints.latest_step()
    if latest is not None:
        print(f"resuming from {checkpoints.directory}/{latest}", flush=True)
        return checkpoints.restore(latest, _abstract(job.state, job.shardings))
    if config.get("init_from"):
        _, variables, record = load_model(config.init_from)
        state, skipped = load_pretrained(job.state, variables, config.get("init_skip") or None)
        print(f"initialised from {config.init_from} ({record['model']['backbone']}); kept fresh: "
              f"{skipped or 'nothing'}", flush=True)
        return state
    return job.state


def run(job: Job, config: Any, workdir: str | Path) -> dict:
    """Train `job` to `job.total_steps`; returns the final state. The checkpoint manager is
    closed however training ends (else orbax's threads die noisily at exit)."""
    checkpoints = TrainCheckpoints(workdir, keep=config.get("keep_checkpoints", 3))
    try:
        return _train(job, config, workdir, checkpoints)
    finally:
        checkpoints.close()


def _train(job: Job, config: Any, workdir: str | Path, checkpoints: TrainCheckpoints) -> dict:
    """`run`'s work: start state, steps, logs, checkpoints, evaluations (module docstring)."""
    state = start_state(job, checkpoints, config)
    if jax.process_index() == 0:  # only now: a workdir whose checkpoint did not match keeps its own
        (Path(workdir) / "config.json").write_text(config.to_json_best_effort(indent=2) + "\n")
    step = int(jax.device_get(state["step"]))
    log = MetricsLog(workdir, job.total_steps, job.global_batch_size, start_step=step,
                     tensorboard=config.get("tensorboard", True))
    rng = jax.random.PRNGKey(config.get("seed", 0) + 1)
    batches = job.train_batches(step)
    log_every, ckpt_every = config.get("log_every", 50), config.get("checkpoint_every", 1000)
    eval_every = config.get("eval_every", 0)
    pending: tuple[int, dict] | None = None  # metrics of the previous step, fetched one step late
    first_step = step + 1
    # Train in chunks (time-limited jobs): stop after this many steps of this process, checkpointed.
    stop_at = step + config.stop_after_steps if config.get("stop_after_steps") else job.total_steps
    stop_at = min(stop_at, job.total_steps)

    def log_train(step_done: int, values: dict) -> None:
        for kind, message in (job.monitor(step_done, values) if job.monitor else {}).items():
            log.warn(step_done, kind, message)
        log.write(step_done, values, epoch=step_done / job.steps_per_epoch)

    def check(step_done: int, metrics: dict) -> dict:
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not (math.isfinite(values["loss"]) and math.isfinite(values.get("grad_norm", 0.0))):
            latest = checkpoints.latest_step()
            kept = ("No checkpoint was written yet" if latest is None else
                    f"The last good checkpoint is step {latest} in {checkpoints.directory}")
            raise NonFiniteError(
                f"non-finite loss {values['loss']} / grad_norm {values.get('grad_norm')} at step "
                f"{step_done}; stopping. {kept}")
        return values

    try:
        with _Preemption() as preemption:
            while step < stop_at:
                if preemption.should_stop(step):
                    print(f"stopping at step {step}: saving a checkpoint", flush=True)
                    break
                batch = next(batches)
                state, metrics = job.step_fn(state, batch, rng)
                step += 1
                if pending is not None:
                    values = check(*pending)
                    if pending[0] % log_every == 0 or pending[0] == first_step:
                        rate, eta = log.throughput(pending[0])
                        if rate > 0:
                            values.update({"img_per_s": rate, "eta_min": eta / 60})
                        log_train(pending[0], values)
                pending = (step, metrics)
                log.progress(step)
                if step == first_step:
                    jax.block_until_ready(metrics)
                    log.reset_clock(step)  # exclude compilation from throughput
                if step % ckpt_every == 0:
                    check(*pending)
                    checkpoints.save(step, state)
                if job.evaluate and eval_every and step % eval_every == 0 and step < job.total_steps:
                    log.write(step, job.evaluate(state))
                    log.reset_clock(step)
            if pending is not None:
                log_train(pending[0], check(*pending))
            if checkpoints.latest_step() != step:
                checkpoints.save(step, state)
            checkpoints.wait()
            if job.evaluate and step == job.total_steps:
                log.write(step, job.evaluate(state))
    finally:
        log.close()
    return state


__all__ = ["Job", "NonFiniteError", "run", "start_state"]
