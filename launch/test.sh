#!/usr/bin/env bash
# The README's test command: set up the lane, then run the whole absltest suite.
#   bash launch/test.sh                 full lane (default)
#   LANE=current bash launch/test.sh    current lane
#   bash launch/test.sh fast|slow       one tier (fast: in-process; slow: real processes)
# Extra arguments go to the runner, e.g. `bash launch/test.sh models_test`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/fashion_mnist_files.sh >/dev/null  # real pictures for image_folder_test
PY="$(bash launch/setup.sh | tail -n 1)"
exec "$PY" -m tests.run_all "$@"
