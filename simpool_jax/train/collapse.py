"""DINO collapse warnings from the metrics logged every log step.

DINO fails in two ways (Caron et al. 2021 §5.3; facebookresearch/dino #43, dinov2 #407), both
visible in `dino.collapse_metrics` over K = out_dim dimensions:

* uniform: the teacher's output is uniform, so its entropy is ln K, and the loss (a cross
  entropy, never below the teacher's entropy) sits at ln K once the student follows;
* one dimension: every image's teacher output is the same one-hot vector, so the per-image
  entropy is 0 and the batch-mean distribution's KL to uniform is ln K.

A rule holds at a log step when its quantities are within `rtol` * ln K of those values (both
together, so a healthy run whose loss hovers near ln K, as short CPU runs do, does not fire). One
noisy step is not a collapse, and neither is the start of training (an untrained head gives
nearly the same output for every image until the centre adapts), so a warning is raised only
after `patience` consecutive log steps from `start_step` (the end of the lr warmup) on, and once
per episode: again only after the rule has stopped holding at some log step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

COLLAPSES = ("uniform", "one_dim")
_HINTS = {
    "uniform": "the teacher output is uniform (centring dominates sharpening: teacher_temp too "
               "high for this run?)",
    "one_dim": "every image gets the same one-hot teacher output (sharpening dominates "
               "centring: centre off or teacher_temp too low?)",
}


def collapse_kinds(metrics: Mapping[str, float], out_dim: int, rtol: float = 0.02) -> set[str]:
    """The collapses whose signature the metrics of one log step show (module docstring)."""
    ln_k = math.log(out_dim)
    loss, entropy = metrics["loss"], metrics["teacher_entropy"]
    kl = metrics["teacher_kl_uniform"]
    found = set()
    if entropy >= (1 - rtol) * ln_k and abs(loss - ln_k) <= rtol * ln_k:
        found.add("uniform")
    if kl >= (1 - rtol) * ln_k and entropy <= rtol * ln_k:
        found.add("one_dim")
    return found


class CollapseMonitor:
    """Counts consecutive collapsed log steps; `update` returns the warnings due at this step."""

    def __init__(self, out_dim: int, start_step: int = 0, patience: int = 3, rtol: float = 0.02):
        if out_dim < 2:
            raise ValueError(f"out_dim must be >= 2 for collapse checks, got {out_dim}")
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.out_dim, self.start_step = out_dim, start_step
        self.patience, self.rtol = patience, rtol
        self._runs = dict.fromkeys(COLLAPSES, 0)

    def update(self, step: int, metrics: Mapping[str, float]) -> dict[str, str]:
        """{kind: message} for each collapse that has now held `patience` log steps in a row."""
        found = set()
        if step >= self.start_step:
            found = collapse_kinds(metrics, self.out_dim, self.rtol)
        warnings = {}
        for kind in COLLAPSES:
            self._runs[kind] = self._runs[kind] + 1 if kind in found else 0
            if self._runs[kind] == self.patience:
                warnings[kind] = (
                    f"DINO {kind.replace('_', '-')} collapse at step {step}: loss "
                    f"{metrics['loss']:.4f}, teacher entropy {metrics['teacher_entropy']:.4f}, KL "
                    f"to uniform {metrics['teacher_kl_uniform']:.4f}, ln(out_dim) "
                    f"{math.log(self.out_dim):.4f}, for {self.patience} log steps in a row; "
                    f"{_HINTS[kind]}")
        return warnings


__all__ = ["COLLAPSES", "CollapseMonitor", "collapse_kinds"]
