#!/usr/bin/env bash
# kmodels' defaults against the plain Keras path on the same folder, model and epochs
# (README Results, "Against plain Keras"). Needs Fashion-MNIST prepared (launch.prepare_data).
#   bash launch/against_plain_keras.sh [OUT_DIR] [PYTHON]
# Per kind of folder: launch.train as configured (crop.policy=auto), launch.train with the
# ImageNet crop policy (kmodels' default before auto), and launch.plain_keras; the same
# ShallowNet, Adam, batch, 3 epochs and seed, float32 everywhere. Prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/against_plain_keras}"
PY="${2:-.venv/bin/python}"
export PYTHONPATH="$PWD"
mkdir -p "$OUT"

accuracy_of_run() {  # accuracy_of_run WORKDIR
  "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['test_accuracy'])" "$1/metrics.json"
}

kind() {  # kind NAME SIZE WRITE_FLAGS...
  local name="$1" size="$2"; shift 2
  local folder="$OUT/$name"
  [ -d "$folder/train" ] || "$PY" -m launch.write_image_folder --dataset=fashion_mnist \
      --out="$folder" --train_examples=6000 --test_examples=1000 "$@" >/dev/null 2>&1
  local common=(--config=configs/base.py --config.dataset.name=image_folder
    "--config.dataset.image_dir=$folder" "--config.dataset.image_size=$size"
    --config.dataset.channels=1 --config.model.name=shallownet --config.train.epochs=3
    --config.train.batch_size=32 --config.train.optimizer.name=adam
    --config.train.optimizer.learning_rate=1e-3 --config.precision=float32)
  local auto imagenet plain
  rm -rf "$OUT/run-$name-auto" "$OUT/run-$name-imagenet"
  "$PY" -m launch.train "${common[@]}" "--workdir=$OUT/run-$name-auto" >"$OUT/$name-auto.log" 2>&1
  auto="$(accuracy_of_run "$OUT/run-$name-auto")"
  "$PY" -m launch.train "${common[@]}" --config.dataset.crop.policy=imagenet \
      "--workdir=$OUT/run-$name-imagenet" >"$OUT/$name-imagenet.log" 2>&1
  imagenet="$(accuracy_of_run "$OUT/run-$name-imagenet")"
  plain="$("$PY" -m launch.plain_keras "${common[@]}" 2>"$OUT/$name-plain.log" | tail -n 1 |
           "$PY" -c "import json,sys; print(json.load(sys.stdin)['test_accuracy'])")"
  local policy
  policy="$(grep -o 'crop.policy=auto -> [a-z]*' "$OUT/$name-auto.log" | head -n 1 | cut -d' ' -f3)"
  printf '| %s at %s px | %.2f %% (%s) | %.2f %% | %.2f %% |\n' "$name" "$size" \
      "$("$PY" -c "print(100*$auto)")" "$policy" "$("$PY" -c "print(100*$imagenet)")" \
      "$("$PY" -c "print(100*$plain)")"
}

echo "| folder, ShallowNet, 3 epochs | kmodels default (auto picks) | kmodels, ImageNet crops | plain Keras |"
echo "|---|---|---|---|"
kind small-mixed 32 --mixed
kind photos 128 --photo_size=160x120
