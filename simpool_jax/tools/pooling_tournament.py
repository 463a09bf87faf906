"""Pooling tournament: one backbone, budget and seed for every pooler, one table (paper Figure 3).

    python -m simpool_jax.tools.pooling_tournament --workdir workdirs/tournament --out docs
    python -m simpool_jax.tools.pooling_tournament --poolers gap,gem,simpool --steps 300 ...

For each pooler the supervised Fashion-MNIST run of `configs/fmnist_supervised.py` (or --config) is
trained by the normal trainer (the supervised job and the loop of train.py, in this process) with
only `model.pooling` / `model.pooling_kwargs` changed, in `<workdir>/<pooler>`. Then it records the
trainer's own test top-1, the foreground IoU of the pooler's attention map where it has one
(`simpool_jax.evaluate.foreground.fashion_mnist_iou`, source 'pooler'), parameters of the pooler
and of the model, forward FLOPs per image and eval img/s (`model_costs`), and the wall time of
training (compilation and the final test evaluation included). A finished pooler's result is kept
in its workdir, so re-running the command skips it; an interrupted one resumes from its checkpoint.

Options per pooler (POOLING_KWARGS): SimPool with the config's γ = 1.25; Slot Attention with
readout 'stack', so the model classifies each slot and takes the max over the slot logits (the
paper's read-out). Everything else runs with its registry defaults. `simpool_ablation` is left
out by default: with its defaults it is SimPool itself.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = ROOT / "configs" / "fmnist_supervised.py"
POOLING_KWARGS: dict[str, dict[str, Any]] = {"simpool": {"gamma": 1.25},
                                             "slot": {"readout": "stack"}}
RESULT_FILE = "tournament_result.json"
OUT_NAME = "pooling_tournament"


def default_poolers() -> list[str]:
    """Every registered pooler except `simpool_ablation`, in the paper's group order."""
    from simpool_jax.tools.tournament_table import GROUPS

    return [p for members in GROUPS.values() for p in members if p != "simpool_ablation"]


def _override(config: Any, assignment: str) -> None:
    """Apply one `dotted.key=value` (value a Python literal, else a string) to `config`."""
    key, sep, text = assignment.partition("=")
    if not sep:
        raise ValueError(f"--set wants key=value, got {assignment!r}")
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    *parents, last = key.split(".")
    node = config
    for name in parents:
        node = node[name]
    if last not in node:
        raise ValueError(f"--set {key}: no such config field")
    node[last] = value


def pooler_config(config_path: Path, pooling: str, steps: int | None, limit: int | None,
                  overrides: list[str] = ()) -> Any:
    """The config file's `get_config()` with this pooler, the budget / data overrides and the
    `--set` assignments (the same for every pooler)."""
    spec = importlib.util.spec_from_file_location("tournament_config", config_path)
    if spec is None or not config_path.is_file():
        raise FileNotFoundError(f"config file {config_path} not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    if config.get("trainer") != "supervised":
        raise ValueError(f"{config_path} is not a supervised config (trainer "
                         f"{config.get('trainer')!r}); the tournament ranks by test top-1")
    config.model.pooling = pooling
    config.model.pooling_kwargs = dict(POOLING_KWARGS.get(pooling, {}))
    if steps:
        config.total_steps = steps
    if limit:
        config.input.limit = config.eval_input.limit = limit
    for assignment in overrides:
        _override(config, assignment)
    return config


def _same_config(workdir: Path, config: Any) -> None:
    """A workdir trained with another config cannot be resumed or reused: say so."""
    saved = workdir / "config.json"
    current = json.loads(config.to_json_best_effort())
    if saved.is_file() and json.loads(saved.read_text()) != current:
        raise SystemExit(f"error: {workdir} holds a run with a different config (budget, limit or "
                         "pooler options); use another --workdir or delete it")


def train(config: Any, workdir: Path) -> tuple[float, bool]:
    """Train (or resume) with the supervised job and train.py's loop; (wall seconds, resumed)."""
    from simpool_jax.parallel import make_mesh
    from simpool_jax.train import loop
    from simpool_jax.train.supervised_trainer import build_job

    workdir.mkdir(parents=True, exist_ok=True)
    resumed = (workdir / "checkpoints").is_dir() and any(
        (workdir / "checkpoints").glob("[0-9]*/commit_success.txt"))
    start = time.perf_counter()
    mesh = make_mesh(tuple(tuple(axis) for axis in config.get("mesh", (("data", -1),))))
    job = build_job(config, mesh, workdir)
    state = loop.run(job, config, workdir)
    seconds = time.perf_counter() - start
    if int(state["step"]) < job.total_steps:
        raise SystemExit(f"interrupted at step {int(state['step'])} of {job.total_steps}, "
                         f"checkpointed in {workdir}; re-run the same command to resume")
    return seconds, resumed


def final_top1(workdir: Path) -> tuple[int, float]:
    """(step, test top-1 %) of the trainer's last evaluation in metrics.jsonl."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval_top1" in r]
    if not evals:
        raise RuntimeError(f"{workdir}/metrics.jsonl has no eval_top1: the run did not evaluate")
    return evals[-1]["step"], float(evals[-1]["eval_top1"])


def measure(workdir: Path, config: Any) -> dict[str, Any]:
    """Foreground IoU, parameters, FLOPs and img/s of the workdir's trained model."""
    import jax
    import jax.numpy as jnp

    from simpool_jax.checkpoint import load_train_workdir
    from simpool_jax.evaluate.foreground import fashion_mnist_iou
    from simpool_jax.tools.model_costs import forward_costs, param_counts

    model, variables, _ = load_train_workdir(workdir)
    shape = (config.image_size, config.image_size, 3)
    probe = jax.eval_shape(lambda v, x: model.apply(v, x, with_head=False), variables,
                           jax.ShapeDtypeStruct((1, *shape), jnp.float32))
    iou = None
    if "attention" in probe:
        iou = fashion_mnist_iou(model, variables, split=config.eval_input.split,
                                limit=config.eval_input.get("limit"),
                                batch_size=config.eval_input.batch_size, pp=config.eval_input.pp,
                                source="pooler")["mean_iou"]
    pooler_params, model_params = param_counts(variables)
    flops, img_per_s = forward_costs(model, variables, shape, config.eval_input.batch_size)
    return {"iou": iou, "pooler_params": pooler_params, "model_params": model_params,
            "flops": flops, "img_per_s": img_per_s}


def run_pooler(pooling: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train and measure one pooler, or read the result a finished earlier run left."""
    workdir = Path(args.workdir).absolute() / pooling
    config = pooler_config(Path(args.config), pooling, args.steps, args.limit, args.set)
    _same_config(workdir, config)
    done = workdir / RESULT_FILE
    if done.is_file():
        print(f"[tournament] {pooling}: finished earlier, reusing {done}", flush=True)
        return json.loads(done.read_text())
    print(f"[tournament] {pooling}: training in {workdir}", flush=True)
    train_s, resumed = train(config, workdir)
    step, top1 = final_top1(workdir)
    result = {"top1": top1, "step": step, "train_s": train_s, "resumed": resumed,
              "pooling_kwargs": dict(config.model.pooling_kwargs), **measure(workdir, config)}
    done.write_text(json.dumps(result, indent=2) + "\n")
    print(f"[tournament] {pooling}: {json.dumps(result)}", flush=True)
    return result


def write_outputs(out: Path, results: dict[str, dict], args: argparse.Namespace,
                  argv: list[str]) -> Path:
    """`<out>/pooling_tournament.md` (budget line + table) and `.json`; returns the .md path."""
    from simpool_jax.tools.tournament_table import markdown, winners

    config = pooler_config(Path(args.config), next(iter(results)), args.steps, args.limit,
                           args.set)
    steps = {r["step"] for r in results.values()}
    command = " ".join(["python -m simpool_jax.tools.pooling_tournament", *argv])
    budget = (f"Budget per pooler: {'/'.join(map(str, sorted(steps)))} steps of batch "
              f"{config.input.batch_size}, seed {config.seed}, {Path(args.config).name}"
              + (f", train / test limited to {args.limit} images" if args.limit else "")
              + (f", overrides {' '.join(args.set)}" if args.set else ""))
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(results)
    (out / f"{OUT_NAME}.md").write_text(f"`{command}`\n\n{budget}\n\n{table}")
    record = {"command": command, "budget": budget, "config": str(args.config),
              "results": results, "winners": winners(results)}
    (out / f"{OUT_NAME}.json").write_text(json.dumps(record, indent=2) + "\n")
    return out / f"{OUT_NAME}.md"


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m simpool_jax.tools.pooling_tournament",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="one sub-directory per pooler")
    parser.add_argument("--out", required=True, help="directory for the .md table and .json")
    parser.add_argument("--poolers", default=None,
                        help="comma-separated registry names (default: all but simpool_ablation)")
    parser.add_argument("--steps", type=int, default=None,
                        help="training steps (default: the config's)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only this many train and test images (smoke runs)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="supervised config file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every pooler, e.g. optim.lr=1e-3 (repeatable)")
    args = parser.parse_args(argv)
    from simpool_jax.pooling import POOLERS

    args.poolers = args.poolers.split(",") if args.poolers else default_poolers()
    unknown = [p for p in args.poolers if p not in POOLERS]
    if unknown:
        parser.error(f"unknown poolers {unknown}; registered: {sorted(POOLERS)}")
    for name, value in (("--steps", args.steps), ("--limit", args.limit)):
        if value is not None and value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    try:  # a bad config file or --set fails here, before any training
        pooler_config(Path(args.config), args.poolers[0], args.steps, args.limit, args.set)
    except (ValueError, KeyError, AttributeError, TypeError, FileNotFoundError) as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> Path:
    """Run the tournament; returns the path of the markdown table."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    from absl import logging

    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    results = {pooling: run_pooler(pooling, args) for pooling in args.poolers}
    path = write_outputs(Path(args.out), results, args, argv)
    print(path.read_text(), flush=True)
    return path


if __name__ == "__main__":
    main()
