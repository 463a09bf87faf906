"""The pooling tournament's table: the paper's groups (Table 1), the winners per group, and the
comparison with the ranking the paper states for its Figure 3 (ResNet-18, ImageNet-20%).

A result is a dict per pooler with `top1` (%), `iou` (mean foreground IoU, or None where the
pooler has no attention map), `pooler_params`, `model_params`, `flops` (forward FLOPs per image),
`img_per_s` (eval forward) and `train_s`. Winners are by top-1; ties go to the earlier pooler
in group order, so the outcome never depends on dict order.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Paper Table 1 groups, in the paper's order. `cls` (the backbone's own class token) is the ViT
# baseline: it is not a pooler on top of a backbone, and Figure 3 (a ResNet-18) has no such entry.
GROUPS: dict[str, tuple[str, ...]] = {
    "simple": ("gap", "max", "gem", "lse", "how"),
    "iterative": ("otk", "kmeans", "slot"),
    "re-weighting": ("se", "ge", "cbam"),
    "transformer": ("cls_block", "cait"),
    "simpool": ("simpool", "simpool_ablation"),
    "baseline": ("cls",),
}
# Figure 3's text: GeM best of group 1, Slot of group 2, GE of group 3, CaiT of group 4,
# SimPool best overall (SIMPOOL.md §6.3).
PAPER_BEST = {"simple": "gem", "iterative": "slot", "re-weighting": "ge", "transformer": "cait",
              "overall": "simpool"}
FIGURE_3_GROUPS = ("simple", "iterative", "re-weighting", "transformer", "simpool")
COLUMNS = ("rank", "group", "pooler", "top-1 %", "fg IoU", "pooler params", "model params",
           "MFLOPs / img", "eval img/s", "train min")


def group_of(pooler: str) -> str:
    """The Table 1 group of a registered pooler name."""
    for group, members in GROUPS.items():
        if pooler in members:
            return group
    raise ValueError(f"pooler {pooler!r} is in no group of {sorted(GROUPS)}")


def _order(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Poolers in group order, then by descending top-1 (ties: group order)."""
    position = {p: i for i, p in enumerate(p for members in GROUPS.values() for p in members)}
    return sorted(results, key=lambda p: (list(GROUPS).index(group_of(p)),
                                          -results[p]["top1"], position[p]))


def _best(results: Mapping[str, Mapping[str, Any]], poolers: list[str]) -> str | None:
    """The highest top-1 among `poolers` (already in group order), None if none ran."""
    ran = [p for p in poolers if p in results]
    return max(ran, key=lambda p: (results[p]["top1"], -ran.index(p))) if ran else None


def group_best(results: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The best pooler of every group that has results."""
    best = {g: _best(results, list(members)) for g, members in GROUPS.items()}
    return {g: p for g, p in best.items() if p is not None}


def winners(results: Mapping[str, Mapping[str, Any]]) -> dict[str, str | None]:
    """Best pooler of each group the paper ranks, and overall (over the Figure-3 groups, so
    without the `cls` baseline); None where a group has no results."""
    best = group_best(results)
    out: dict[str, str | None] = {g: best.get(g) for g in PAPER_BEST if g != "overall"}
    out["overall"] = _best(results, [p for g in FIGURE_3_GROUPS for p in GROUPS[g]])
    return out


def ranks(results: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Overall rank by top-1 (1 = best; equal top-1 share a rank)."""
    return {p: 1 + sum(r["top1"] > results[p]["top1"] for r in results.values()) for p in results}


def _count(n: int) -> str:
    return f"{n / 1e6:.3f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def _cells(name: str, r: Mapping[str, Any], rank: int, bold: bool) -> list[str]:
    top1 = f"{r['top1']:.2f}"
    iou = r.get("iou")
    return [str(rank), group_of(name), f"**{name}**" if bold else name,
            f"**{top1}**" if bold else top1,
            "—" if iou is None or not math.isfinite(iou) else f"{iou:.3f}",
            _count(r["pooler_params"]), _count(r["model_params"]), f"{r['flops'] / 1e6:.1f}",
            f"{r['img_per_s']:.0f}", f"{r['train_s'] / 60:.1f}"]


def markdown(results: Mapping[str, Mapping[str, Any]]) -> str:
    """The results table (group winners in bold) and the per-group comparison with the paper."""
    if not results:
        raise ValueError("no results to tabulate")
    best = winners(results)
    rank = ranks(results)
    bold = set(group_best(results).values())
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(p, results[p], rank[p], p in bold)) + " |"
              for p in _order(results)]
    lines += ["", "| best of | paper (Figure 3) | ours | agrees |", "|---|---|---|---|"]
    for group, paper in PAPER_BEST.items():
        ours = best.get(group)
        if ours is None:
            lines.append(f"| {group} | {paper} | not run | — |")
            continue
        verdict = "yes" if ours == paper else "no" if paper in results else "(paper's not run)"
        if group != "overall" and sum(p in results for p in GROUPS[group]) == 1:
            verdict += " (only one of the group run)"
        detail = (f" ({paper}: {results[paper]['top1']:.2f})"
                  if paper in results and ours != paper else "")
        lines.append(f"| {group} | {paper} | {ours} {results[ours]['top1']:.2f}{detail} | "
                     f"{verdict} |")
    return "\n".join(lines) + "\n"


__all__ = ["GROUPS", "PAPER_BEST", "COLUMNS", "group_of", "group_best", "winners", "ranks",
           "markdown"]
