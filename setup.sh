#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh Debian/Ubuntu machine with Python 3.11:
# a virtual environment in .venv with the pinned requirements and this package (editable).
# About 2 minutes and 3.5 GB the first time; seconds when everything is already there.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
# The embedded default dataset (Fashion-MNIST, 30 MB) from Debian, where apt exists and we may use it.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) \
    || echo "setup.sh: could not install dataset-fashion-mnist; tests that need it will skip" >&2
fi
# pip's output goes to a log that is shown only when it fails (this machine's pip config also
# prints hundreds of harmless "Location ... is ignored" lines).
pip_quiet() {
  local log
  log=$(mktemp)
  if ! .venv/bin/pip install -q "$@" >"$log" 2>&1; then
    grep -v "is ignored" "$log" >&2
    echo "setup.sh: pip install $* failed" >&2
    exit 1
  fi
  rm -f "$log"
}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
pip_quiet --upgrade pip
pip_quiet -r requirements.txt
pip_quiet --no-deps -e .
.venv/bin/python -c "import jax, flax, optax, orbax.checkpoint, torch, simpool_jax" \
  || { echo "setup.sh: the environment does not import; see the pip output above" >&2; exit 1; }
