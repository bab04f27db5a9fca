#!/usr/bin/env bash
# Makes the virtualenv of a lane with its exact pins and kmodels installed (editable).
#   bash launch/setup.sh                 full lane (TF 2.15 + Estimator): .venv
#   LANE=current bash launch/setup.sh    current lane (TF 2.21 + tf-keras): .venv-current
#   LANE=lint bash launch/setup.sh       the formatter and linter of launch/lint.sh: .venv-lint
# Prints the venv's python path on the last line.
#
# The venv itself lives in a cache named by the hash of the lane's lock file and
# pyproject.toml (KMODELS_VENV_CACHE, default ~/.cache/kmodels/venvs) and .venv links to
# it: a fresh clone with the same pins reuses it instead of installing TensorFlow again.
# A failed install stops here, naming what pip could not install.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
LANE="${LANE:-full}"
case "$LANE" in
  full) LINK=.venv ;;
  current) LINK=.venv-current ;;
  lint) LINK=.venv-lint ;;
  *) echo "LANE must be 'full', 'current' or 'lint', got '$LANE'" >&2; exit 2 ;;
esac
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
LOCK="launch/lanes/$LANE.txt"
HASH="$(cat "$LOCK" pyproject.toml | sha256sum | cut -c1-16)"
CACHE="${KMODELS_VENV_CACHE:-$HOME/.cache/kmodels/venvs}"
VENV="$CACHE/$LANE-$HASH"
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT

pip_install() {  # pip_install WHAT ARGS...: fails loudly with pip's own words
  local what="$1"; shift
  if ! "$VENV/bin/pip" install --disable-pip-version-check "$@" >"$LOG" 2>&1; then
    echo "[setup] FAILED: pip could not install $what into $VENV ($LANE lane). pip said:" >&2
    grep -E "ERROR|error:|No matching|Could not|conflict" "$LOG" | head -20 >&2 || tail -20 "$LOG" >&2
    exit 1
  fi
}

if [ ! -f "$VENV/.kmodels-complete" ]; then
  rm -rf "$VENV"
  mkdir -p "$CACHE"
  echo "[setup] creating the $LANE lane's venv $VENV with $($PYTHON --version) from $LOCK" >&2
  "$PYTHON" -m venv "$VENV"
  pip_install "the pins of $LOCK" --quiet -r "$LOCK"
  touch "$VENV/.kmodels-complete"
fi
link_and_print() {
  if [ "$(readlink "$LINK" 2>/dev/null)" != "$VENV" ]; then
    rm -rf "$LINK"
    ln -s "$VENV" "$LINK"
  fi
  echo "$REPO/$LINK/bin/python"
}
if [ "$LANE" = lint ]; then  # tools only: no kmodels, no TensorFlow
  link_and_print
  exit 0
fi
# kmodels itself, editable, from this checkout (another clone may have installed its own).
# Checked from outside the repo, where `import kmodels` works only if the install did.
installed_from() {
  (cd / && TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c \
    "import os, kmodels; print(os.path.dirname(os.path.dirname(kmodels.__file__)))" 2>/dev/null)
}
if [ "$(installed_from)" != "$REPO" ]; then
  pip_install "kmodels from $REPO" --quiet --no-deps --no-build-isolation -e .
  if [ "$(installed_from)" != "$REPO" ]; then
    echo "[setup] FAILED: after pip install -e ., 'import kmodels' outside the repo does not" \
         "find $REPO (got '$(installed_from)')" >&2
    exit 1
  fi
fi
if ! (cd / && TF_CPP_MIN_LOG_LEVEL=3 "$VENV/bin/python" -c "import tensorflow, tensorflow_datasets" \
      2>"$LOG"); then
  echo "[setup] FAILED: the $LANE lane's venv cannot import TensorFlow and tfds:" >&2
  tail -5 "$LOG" >&2
  exit 1
fi
link_and_print
