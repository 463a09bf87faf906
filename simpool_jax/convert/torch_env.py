"""Importing timm beside a CPU-only torch.

timm imports torchvision at module level; PyPI's torchvision 0.28 wheel is a CUDA build whose C++
ops do not load beside torch+cpu, and its import then dies on `register_fake("torchvision::nms")`
("operator torchvision::nms does not exist"). Defining the two op schemas first lets the
pure-Python parts of torchvision (all timm needs) import. A no-op where torchvision's ops loaded.
"""

from __future__ import annotations

from types import ModuleType

_TORCHVISION_SCHEMAS = None  # keeps the torch.library registration alive


def ensure_torchvision_importable() -> None:
    """Register torchvision's nms/qnms schemas if its compiled ops failed to load."""
    global _TORCHVISION_SCHEMAS
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018 - present when torchvision's _C loaded
        return
    except (AttributeError, RuntimeError):
        pass
    if _TORCHVISION_SCHEMAS is None:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_SCHEMAS = lib


def import_timm() -> ModuleType:
    """`import timm`, working around the CUDA-torchvision-beside-CPU-torch import failure."""
    ensure_torchvision_importable()
    import timm

    return timm
