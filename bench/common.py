"""What the ours-vs-PyTorch benchmarks share: core pinning, interleaved timing, contention, output.

Fairness of threads: both frameworks run in one process on the same cores. `--threads N`
(default 2, this machine's core count) sets `torch.set_num_threads(N)` and, when N is below the
number of usable cores, pins the whole process to N cores with `os.sched_setaffinity` *before*
jax is imported (XLA:CPU sizes its intra-op thread pool from the schedulable CPUs), so both
frameworks may use exactly N cores. `XLA_FLAGS` from the environment is passed through unchanged.

Scratch memory: like train.py, `start` keeps XLA:CPU's per-step scratch block in the heap
(simpool_jax/host_memory.py: glibc settings for the whole process, synchronous CPU dispatch);
`--no-keep-scratch` leaves glibc's defaults. The glibc settings apply to PyTorch in the same
process too; its step times measured the same with and without them (README).

Timing protocol (`measure`): `warmup` untimed calls of each framework, then `iters` rounds; each
round times one call of each framework back to back, alternating which goes first (ABBA...), so
machine drift and any order effect hit both equally. The machine is shared, so each row also
carries the 1-min load average before/after and, from /proc/stat minus this process's own CPU
time, how many cores' worth of CPU *other* processes used while the case was timed (about 0
means a clean run; the load average counts this process's own threads too, so it is not a
contention measure). `--wait-quiet SECONDS` waits before each case for a 5 s window with other
processes under 0.1 core. Contention hurts PyTorch's OpenMP far more than XLA's work-stealing
pool, so only rows with "other procs" near 0 are a fair comparison.

Import this module before jax / torch / timm: it sets the offline-hub and TF log defaults, and
makes the repo root importable (`tests.reference`, `configs.*`).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, TextIO  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def bench_parser(doc: str, cases: dict) -> argparse.ArgumentParser:
    """A parser described by the bench's docstring, with --models (a comma-separated subset)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--models", default=",".join(cases),
                   help=f"comma-separated subset of {','.join(cases)}")
    return p


def parse_bench_args(p: argparse.ArgumentParser, argv: list[str] | None, cases: dict, iters: int,
                     warmup: int) -> argparse.Namespace:
    """Adds --iters, --warmup, --threads, --json, --wait-quiet (module docstring), parses, and
    turns args.models into a list of names checked against `cases`."""
    p.add_argument("--iters", type=int, default=iters, help="timed rounds (one call of each)")
    p.add_argument("--warmup", type=int, default=warmup, help="untimed calls per framework")
    p.add_argument("--threads", type=int, default=2, help="cores for both frameworks")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout, table on stderr")
    p.add_argument("--no-keep-scratch", action="store_true",
                   help="leave XLA:CPU's scratch memory to glibc's defaults (train.py and "
                        "eval_knn.py keep it: simpool_jax/host_memory.py)")
    p.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                   help="before each case, wait up to SECONDS for a 5 s window in which other "
                        "processes use < 0.1 core (the machine is shared)")
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in args.models:
        if m not in cases:
            p.error(f"unknown model {m!r}; choose from {sorted(cases)}")
    return args


def limit_cores(threads: int) -> str:
    """Pin the process to `threads` cores if fewer than available (before importing jax)."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
        os.sched_setaffinity(0, cpus[:threads])
        return f"pinned to cores {cpus[:threads]} of {cpus}"
    return f"all {len(cpus)} cores {cpus}"


def start(args: argparse.Namespace, with_torch: bool, settings: str) -> TextIO:
    """Pin cores, import jax (and torch with its thread count), print the preamble line.

    Returns the stream the table goes to (stderr with --json)."""
    cores = limit_cores(args.threads)
    import jax

    from simpool_jax.host_memory import keep_cpu_scratch_memory

    kept = not args.no_keep_scratch and keep_cpu_scratch_memory()

    versions = f"jax {jax.__version__} ({jax.devices()[0].device_kind})"
    if with_torch:
        import torch

        torch.set_num_threads(args.threads)
        versions += f", torch {torch.__version__}"
    table = sys.stderr if args.json else sys.stdout
    print(f"{versions}; threads={args.threads}, {cores}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}; scratch memory kept: {kept}; "
          f"{settings}, warmup {args.warmup}, "
          f"{args.iters} interleaved timed iters; load avg {os.getloadavg()}", file=table)
    return table


def busy_cpu_seconds() -> float | None:
    """CPU seconds all processes of the machine have used so far (/proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def wait_quiet(max_wait: float, window: float = 5.0, threshold: float = 0.1) -> float | None:
    """Wait (up to max_wait s) until other processes use < threshold cores over `window` s.

    Returns the last window's other-process load (cores), or None without /proc/stat.
    """
    deadline = time.monotonic() + max_wait
    while True:
        busy0, own0 = busy_cpu_seconds(), own_cpu_seconds()
        time.sleep(window)
        busy1, own1 = busy_cpu_seconds(), own_cpu_seconds()
        if busy0 is None or busy1 is None:
            return None
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / window
        if others < threshold or time.monotonic() >= deadline:
            return others


def time_call(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def median_ms_in_blocks(calls: dict[str, Callable[[], Any]], iters: int,
                        warmup: int) -> dict[str, float]:
    """Median ms per call of each of `calls`, timed in blocks for millisecond-sized calls.

    Each callable runs `warmup` times, then in blocks of one untimed and `iters` timed calls, in
    the order given and then reversed (ABBA over blocks). Not interleaved call by call as in
    `measure`: each framework's worker threads stay busy for a while after its call, which slows
    the other's next call by up to ~1 ms. An XLA call right after a torch matmul ran 3.1 ms
    instead of 2.4 (a 6272x384 -> 96 weight gradient, two cores; 2.6 with
    OMP_WAIT_POLICY=PASSIVE), and torch's depthwise convs in dwconv.py took twice their block
    time interleaved. Negligible for `measure`'s whole steps (0.2-5 s); not at these sizes."""
    for fn in calls.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {key: [] for key in calls}
    for key in list(calls) + list(calls)[::-1]:
        calls[key]()
        times[key] += [time_call(calls[key]) for _ in range(iters)]
    return {key: 1e3 * statistics.median(v) for key, v in times.items()}


@dataclass
class Timing:
    """Per-call seconds of each framework (reference empty when not run) and the conditions."""

    ours: list[float]
    reference: list[float]
    load: tuple[float, float]
    others: float | None

    def row(self, case: str, images_per_call: int, compile_s: float) -> dict:
        """The benchmark row: JSON keys (DESIGN.md) and underscore-prefixed table-only extras."""
        med_ours = statistics.median(self.ours)
        med_ref = statistics.median(self.reference) if self.reference else None
        ours = images_per_call / med_ours
        ref = None if med_ref is None else images_per_call / med_ref
        return dict(
            case=case, ours=ours, reference=ref, unit="img/s",
            ratio=None if ref is None else ours / ref, compile_s=compile_s,
            _s_ours=med_ours, _s_ref=med_ref, _range_ours=(min(self.ours), max(self.ours)),
            _range_ref=(min(self.reference), max(self.reference)) if self.reference else None,
            _load=self.load, _others=self.others)


def measure(ours: Callable[[], Any], reference: Callable[[], Any] | None, iters: int,
            warmup: int, wait_quiet_s: float = 0.0) -> Timing:
    """Warm up, then time `iters` ABBA-alternated rounds (module docstring)."""
    if wait_quiet_s > 0:
        wait_quiet(wait_quiet_s)
    load_before = os.getloadavg()
    fns = [ours] if reference is None else [ours, reference]
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    busy0, own0, wall0 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    for i in range(iters):
        order = range(len(fns)) if i % 2 == 0 else reversed(range(len(fns)))
        for k in order:
            times[k].append(time_call(fns[k]))
    busy1, own1, wall1 = busy_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    # Cores' worth of CPU that *other* processes used while we timed (0 = machine was ours).
    others = (None if busy0 is None or busy1 is None
              else max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0))
    return Timing(times[0], times[1] if reference is not None else [],
                  (load_before[0], os.getloadavg()[0]), others)


def _num(value: float | None, fmt: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else format(value, f"{width}{fmt}")


def print_header(table: TextIO, checks: str) -> None:
    """Column titles; `checks` names the bench's sanity-check columns."""
    print(f"{'case':<44} {'ours s/it':>9} {'ref s/it':>9} {'ours img/s':>10} "
          f"{'ref img/s':>9} {'ratio':>6} {'compile s':>9}  ours min-max / ref min-max (s)   "
          f"{checks}  load1 before->after  other procs (cores)", file=table, flush=True)


def print_row(table: TextIO, row: dict, checks: str, as_json: bool) -> None:
    """One table line (with the bench's formatted `checks`) and, with --json, the JSON line."""
    ref_range = ("-" if row["_range_ref"] is None
                 else f"{row['_range_ref'][0]:.3f}-{row['_range_ref'][1]:.3f}")
    print(f"{row['case']:<44} {row['_s_ours']:9.3f} {_num(row['_s_ref'], '.3f', 9)} "
          f"{row['ours']:10.2f} {_num(row['reference'], '.2f', 9)} {_num(row['ratio'], '.2f', 6)} "
          f"{row['compile_s']:9.1f}  {row['_range_ours'][0]:.3f}-{row['_range_ours'][1]:.3f} / "
          f"{ref_range}   {checks}  {row['_load'][0]:.2f}->{row['_load'][1]:.2f}  "
          f"{_num(row['_others'], '.2f', 4)}", file=table, flush=True)
    if as_json:
        print(json.dumps({k: v for k, v in row.items() if not k.startswith("_")}), flush=True)


# The train-step benches' sanity check: first-step loss and pre-clipping gradient norm of both.
FIRST_STEP_HEADER = "1st loss ours / ref |Δ|   1st grad-norm ref, rel. |Δ|"


def format_first_step(c: dict, tolerance: float = 1e-3) -> str:
    """`FIRST_STEP_HEADER`'s columns from {loss_ours, grad_norm_ours[, loss_ref, grad_norm_ref]};
    'MISMATCH' where a relative difference exceeds `tolerance` (fp32 agrees to ~1e-4)."""
    if "loss_ref" not in c:
        return f"{c['loss_ours']:.5f} / - -   - -"
    d_loss = abs(c["loss_ours"] - c["loss_ref"])
    d_norm = abs(c["grad_norm_ours"] - c["grad_norm_ref"]) / max(abs(c["grad_norm_ref"]), 1e-12)
    flag = " MISMATCH" if max(d_loss / max(abs(c["loss_ref"]), 1e-12), d_norm) > tolerance else ""
    return (f"{c['loss_ours']:.5f} / {c['loss_ref']:.5f} {d_loss:.1e}   "
            f"{c['grad_norm_ref']:.3e} {d_norm:.1e}{flag}")
