#!/usr/bin/env bash
# The README's main job: set up, get real Fashion-MNIST offline, train, report.
#   bash launch/quickstart.sh [WORKDIR [--config.a.b=v ...]]   (default: runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${1:-runs/quickstart}"
shift || true  # the rest: overrides for launch.train
ARCHIVES="$(bash launch/fashion_mnist_files.sh)"
PY="$(bash launch/setup.sh | tail -n 1)"
# Prepares through tfds' manual_dir path; a no-op (seconds) when already prepared.
"$PY" -m launch.prepare_data --dataset=fashion_mnist --archive_dir="$ARCHIVES" 2>&1 \
  | grep -E "Prepared|error" >&2
"$PY" -m launch.train --config=configs/fashion_mnist_quickstart.py --workdir="$WORKDIR" \
  --alsologtostderr "$@"
echo "[quickstart] done: plot $WORKDIR/curves.png, metrics $WORKDIR/metrics.json," \
  "report $WORKDIR/classification_report.txt, SavedModel $WORKDIR/export/ (its highest version)," \
  "TensorBoard: tensorboard --logdir $WORKDIR/tensorboard" >&2
