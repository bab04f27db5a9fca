#!/usr/bin/env bash
# The quickstart against its peers in one run on one machine (README Results, "Time to
# accuracy"): kmodels' quickstart, and the plain Keras path (tfds' Keras tutorial input,
# model.fit) with the same model, recipe, epochs and seed; then the quickstart's work in
# FLOPs (launch.work_to_accuracy), against the 4 epochs it trained before.
#   bash launch/time_to_accuracy.sh [OUT_DIR] [PYTHON]
# Needs Fashion-MNIST prepared (launch.prepare_data). Seconds hold for this machine only;
# the ratios and the FLOPs are what carries to others.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/time_to_accuracy}"
PY="${2:-.venv/bin/python}"
export PYTHONPATH="$PWD"
mkdir -p "$OUT"
QUICKSTART=(--config=configs/fashion_mnist_quickstart.py --config.precision=float32)

value() {  # value JSON_FILE KEY
  "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"
}

rm -rf "$OUT/kmodels" "$OUT/kmodels-4-epochs"
"$PY" -m launch.train "${QUICKSTART[@]}" "--workdir=$OUT/kmodels" >"$OUT/kmodels.log" 2>&1
"$PY" -m launch.plain_keras "${QUICKSTART[@]}" 2>"$OUT/plain.log" | tail -n 1 >"$OUT/plain.json"
"$PY" -m launch.train "${QUICKSTART[@]}" --config.train.epochs=4 \
    "--workdir=$OUT/kmodels-4-epochs" >"$OUT/kmodels-4-epochs.log" 2>&1

kmodels_seconds="$(value "$OUT/kmodels/metrics.json" train_seconds)"
plain_seconds="$(value "$OUT/plain.json" train_seconds)"
echo "| path (fastcnn, float32) | test accuracy | training s | time vs kmodels |"
echo "|---|---|---|---|"
printf '| kmodels quickstart | %.2f %% | %.1f | 1.00 |\n' \
    "$("$PY" -c "print(100 * $(value "$OUT/kmodels/metrics.json" test_accuracy))")" "$kmodels_seconds"
printf '| plain Keras, same model and recipe | %.2f %% | %.1f | %.2f |\n' \
    "$("$PY" -c "print(100 * $(value "$OUT/plain.json" test_accuracy))")" "$plain_seconds" \
    "$("$PY" -c "print($plain_seconds / $kmodels_seconds)")"
echo
"$PY" -m launch.work_to_accuracy "--workdir=$OUT/kmodels-4-epochs" "--workdir=$OUT/kmodels" 2>/dev/null
