#!/usr/bin/env bash
# Creates (or updates) the virtualenv of a lane with its exact pins and installs kmodels.
#   bash launch/setup.sh            full lane (TF 2.15 + Estimator) in .venv
#   LANE=current bash launch/setup.sh   current lane (TF 2.21 + tf-keras) in .venv-current
# Prints the venv's python path on the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
LANE="${LANE:-full}"
case "$LANE" in
  full) VENV=.venv ;;
  current) VENV=.venv-current ;;
  *) echo "LANE must be 'full' or 'current', got '$LANE'" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
LOCK="launch/lanes/$LANE.txt"
STAMP="$VENV/.kmodels-lock.sha256"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV ($LANE lane) with $($PYTHON --version)" >&2
  "$PYTHON" -m venv "$VENV"
fi
# Skip pip when the venv already holds exactly this lock file (repeat runs start fast).
if [ "$(cat "$STAMP" 2>/dev/null)" != "$(sha256sum "$LOCK" pyproject.toml)" ]; then
  echo "[setup] installing $LOCK into $VENV" >&2
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$LOCK" 2>&1 \
    | grep -v "^WARNING: Location .* is ignored" >&2 || true
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 \
    | grep -v "^WARNING: Location .* is ignored" >&2 || true
  TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c "import kmodels, tensorflow, tensorflow_datasets" 2>/dev/null \
    || { echo "[setup] install of $LOCK failed" >&2; exit 1; }
  sha256sum "$LOCK" pyproject.toml > "$STAMP"
fi
echo "$VENV/bin/python"
