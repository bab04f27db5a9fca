#!/usr/bin/env bash
# The quickstart against its peers in one run on one machine (README Results, "Time to
# accuracy"): kmodels' quickstart; the plain Keras path (tfds' Keras tutorial input +
# model.fit) and the tutorial's path (ImageDataGenerator + model.fit), each with the same
# model, recipe and seed, trained until their test accuracy reaches TARGET (the
# quickstart's goal, 0.90) or MAX_EPOCHS pass; then the time each took to the target as a
# ratio to kmodels', and the quickstart's work in FLOPs (launch.work_to_accuracy).
#   [TARGET=0.9] [MAX_EPOCHS=6] [FOUR_EPOCHS=1] bash launch/time_to_accuracy.sh [OUT] [PY]
# FOUR_EPOCHS=1 also trains the former 4-epoch quickstart, to compare the work.
# Needs Fashion-MNIST prepared (launch.prepare_data). Seconds hold for this machine only;
# the ratios and the FLOPs are what carries to others.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/time_to_accuracy}"
PY="${2:-.venv/bin/python}"
TARGET="${TARGET:-0.9}"
MAX_EPOCHS="${MAX_EPOCHS:-6}"
export PYTHONPATH="$PWD"
mkdir -p "$OUT"
QUICKSTART=(--config=configs/fashion_mnist_quickstart.py --config.precision=float32)

rm -rf "$OUT/kmodels" "$OUT/kmodels-4-epochs"
"$PY" -m launch.train "${QUICKSTART[@]}" "--workdir=$OUT/kmodels" >"$OUT/kmodels.log" 2>&1
for path in plain tutorial; do
  # The peers' epochs are whole passes (the quickstart's 225-step cap is kmodels' own).
  "$PY" -m launch.plain_keras "${QUICKSTART[@]}" \
      "--config.train.epochs=$MAX_EPOCHS" "--path=$path" "--target_accuracy=$TARGET" \
      2>"$OUT/$path.log" | tail -n 1 >"$OUT/$path.json"
done
if [ -n "${FOUR_EPOCHS:-}" ]; then
  "$PY" -m launch.train "${QUICKSTART[@]}" --config.train.epochs=4 \
      --config.train.steps_per_epoch=234 "--workdir=$OUT/kmodels-4-epochs" \
      >"$OUT/kmodels-4-epochs.log" 2>&1
fi

"$PY" - "$OUT" "$TARGET" <<'EOF'
import json, sys
out, target = sys.argv[1], float(sys.argv[2])
kmodels = json.load(open(f"{out}/kmodels/metrics.json"))
k_seconds, k_accuracy = kmodels["train_seconds"], kmodels["test_accuracy"]
print(f"| path (fastcnn, float32, same recipe) | test accuracy per epoch | "
      f"seconds to {target:.0%} | time vs kmodels |")
print("|---|---|---|---|")
reached = "" if k_accuracy >= target else " (target not reached)"
print(f"| kmodels quickstart | {k_accuracy:.2%} (end) | {k_seconds:.1f}{reached} | 1.00 |")
names = {"plain": "plain Keras (tfds' Keras tutorial input + fit)",
         "tutorial": "the tutorial's path (ImageDataGenerator + fit)"}
for path, name in names.items():
  peer = json.load(open(f"{out}/{path}.json"))
  per_epoch = ", ".join(f"{e['test_accuracy']:.2%}" for e in peer["epochs"])
  if peer["seconds_to_target"] is None:
    last = peer["epochs"][-1]["seconds"]
    print(f"| {name} | {per_epoch} | not in {len(peer['epochs'])} epochs ({last:.1f}) "
          f"| > {last / k_seconds:.2f} |")
  else:
    print(f"| {name} | {per_epoch} | {peer['seconds_to_target']:.1f} "
          f"| {peer['seconds_to_target'] / k_seconds:.2f} |")
EOF
echo
runs=("--workdir=$OUT/kmodels")
[ -d "$OUT/kmodels-4-epochs" ] && runs=("--workdir=$OUT/kmodels-4-epochs" "${runs[@]}")
"$PY" -m launch.work_to_accuracy "${runs[@]}" 2>/dev/null
