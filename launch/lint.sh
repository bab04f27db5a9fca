#!/usr/bin/env bash
# The house style, checked: yapf (Google style, 2-space indents, 100 columns; settings in
# .style.yapf) and pylint (.pylintrc: checks that catch real mistakes).
#   bash launch/lint.sh            the Python files changed against HEAD (before a commit)
#   bash launch/lint.sh BASE       ... and in the commits since BASE (e.g. origin/main)
#   bash launch/lint.sh --all      every Python file (.ci/run)
#   FIX=1 bash launch/lint.sh ...  reformat those files instead of showing the diff
# Exit 1 naming what is off: yapf's diff, pylint's findings.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(LANE=lint bash launch/setup.sh | tail -n 1)"
BIN="$(dirname "$PY")"
ROOTS=(kmodels launch tests configs)

if [ "${1:-}" = "--all" ]; then
  mapfile -t files < <(git ls-files -- "${ROOTS[@]}" | grep '\.py$')
else
  mapfile -t files < <({ git diff --name-only "${1:-HEAD}" -- "${ROOTS[@]}"
                         git ls-files --others --exclude-standard -- "${ROOTS[@]}"; } |
                       grep '\.py$' | sort -u | while read -r f; do [ -f "$f" ] && echo "$f"; done)
fi
if [ "${#files[@]}" -eq 0 ]; then
  echo "lint: no changed Python files"
  exit 0
fi
if [ -n "${FIX:-}" ]; then
  "$BIN/yapf" --in-place --parallel "${files[@]}"
fi
status=0
if ! "$BIN/yapf" --diff --parallel "${files[@]}"; then
  echo "lint: yapf would reformat the files above (FIX=1 bash launch/lint.sh ... does)" >&2
  status=1
fi
if ! "$BIN/pylint" --rcfile=.pylintrc "${files[@]}"; then
  status=1
fi
[ "$status" -eq 0 ] && echo "lint: ${#files[@]} files formatted and clean"
exit "$status"
