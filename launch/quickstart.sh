#!/usr/bin/env bash
# The README's main job: set up, get real Fashion-MNIST offline, train, report.
#   bash launch/quickstart.sh [WORKDIR]        (default: runs/quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
WORKDIR="${1:-runs/quickstart}"
ARCHIVES=/usr/share/datasets/fashion-mnist

if [ ! -f "$ARCHIVES/train-images-idx3-ubyte.gz" ] && command -v apt-get >/dev/null; then
  echo "[quickstart] installing Debian's dataset-fashion-mnist (real Fashion-MNIST files)" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
PY="$(bash launch/setup.sh | tail -n 1)"
# Prepares through tfds' manual_dir path; a no-op (seconds) when already prepared.
"$PY" -m launch.prepare_data --dataset=fashion_mnist --archive_dir="$ARCHIVES" 2>&1 \
  | grep -E "Prepared|error" >&2
"$PY" -m launch.train --config=configs/fashion_mnist_quickstart.py --workdir="$WORKDIR" \
  --alsologtostderr
echo "[quickstart] done: plot $WORKDIR/curves.png, metrics $WORKDIR/metrics.json," \
  "report $WORKDIR/classification_report.txt, SavedModel $WORKDIR/export/," \
  "TensorBoard: tensorboard --logdir $WORKDIR/tensorboard" >&2
