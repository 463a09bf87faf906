"""Where training numbers go: one console line per log step (with a progress bar on a TTY),
TensorBoard events (tf.summary) and `metrics.jsonl` in the workdir, from process 0 only; warnings
(e.g. DINO collapse) go to all three as well."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import jax


class MetricsLog:
    """Console, TensorBoard and JSON-lines logging of scalar metrics; throughput and ETA."""

    def __init__(self, workdir: str | Path, total_steps: int, batch_size: int, start_step: int = 0,
                 tensorboard: bool = True):
        self.main = jax.process_index() == 0
        self.total_steps, self.batch_size = total_steps, batch_size
        self._t0, self._step0 = time.perf_counter(), start_step
        self._jsonl = open(Path(workdir) / "metrics.jsonl", "a") if self.main else None
        self._tb = None
        if self.main and tensorboard:
            import tensorflow as tf

            self._tb = tf.summary.create_file_writer(str(Path(workdir) / "tensorboard"))
        self._bar = None
        if self.main and sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", leave=False)

    def throughput(self, step: int) -> tuple[float, float]:
        """(images/s, seconds left) since the last reset."""
        elapsed = time.perf_counter() - self._t0
        done = step - self._step0
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (self.total_steps - step) / rate if rate else float("nan")
        return rate * self.batch_size, eta

    def reset_clock(self, step: int) -> None:
        """Restart throughput timing (after compilation or evaluation)."""
        self._t0, self._step0 = time.perf_counter(), step

    def write(self, step: int, metrics: dict[str, Any], epoch: float | None = None,
              console: bool = True) -> None:
        """Record scalars for `step`; print the standard line when `console`."""
        if not self.main:
            return
        scalars = {k: float(v) for k, v in metrics.items()}
        record = {"step": step, **({"epoch": round(epoch, 4)} if epoch is not None else {}), **scalars}
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            import tensorflow as tf

            with self._tb.as_default(step=step):
                for name, value in scalars.items():
                    tf.summary.scalar(name, value)
            self._tb.flush()
        if console:
            parts = [f"step {step}/{self.total_steps}"]
            if epoch is not None:
                parts.append(f"epoch {epoch:.2f}")
            parts += [f"{k} {v:.4g}" for k, v in scalars.items()]
            print(" | ".join(parts), flush=True)

    def warn(self, step: int, kind: str, message: str) -> None:
        """Record a warning: a console line, a {"step", "warning", "message"} JSON line and a
        TensorBoard text summary."""
        if not self.main:
            return
        self._jsonl.write(json.dumps({"step": step, "warning": kind, "message": message}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            import tensorflow as tf

            with self._tb.as_default(step=step):
                tf.summary.text(f"warning/{kind}", message)
            self._tb.flush()
        print(f"WARNING {message}", flush=True)

    def progress(self, step: int) -> None:
        """Advance the TTY progress bar."""
        if self._bar is not None:
            self._bar.n = step
            self._bar.refresh()

    def close(self) -> None:
        """Flush and close every sink."""
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


__all__ = ["MetricsLog"]
