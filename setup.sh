#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh Debian/Ubuntu machine with Python 3.11:
# a virtual environment in .venv with the pinned requirements and this package (editable).
# About 2 minutes and 3.5 GB the first time; seconds when everything is already there.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
  .venv/bin/pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
fi
# The machine's pip config prints harmless "Location ... is ignored" lines: filter them.
.venv/bin/pip install -q -r requirements.txt 2>&1 | grep -v "is ignored" || true
.venv/bin/pip install -q --no-deps -e . 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import jax, flax, optax, orbax.checkpoint, torch, simpool_jax" \
  || { echo "setup.sh: the environment does not import; see the pip output above" >&2; exit 1; }
