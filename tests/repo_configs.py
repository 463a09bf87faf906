"""The repository's configs/*.py loaded by path (configs/ is not a package the tests can import)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def get_config(name: str, arg: str | None = None) -> ml_collections.ConfigDict:
    """configs/<name>.py's get_config(arg) (its default when arg is None)."""
    spec = importlib.util.spec_from_file_location(f"configs_{name}", CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config() if arg is None else module.get_config(arg)
