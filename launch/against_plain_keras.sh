#!/usr/bin/env bash
# kmodels' defaults against the plain Keras path on the same data, model and epochs
# (README Results, "Against plain Keras"). Needs Fashion-MNIST prepared (launch.prepare_data).
#   [SEEDS="0 1 2"] [KINDS="tfds small-mixed photos"] bash launch/against_plain_keras.sh [OUT_DIR] [PYTHON]
# Per kind of data (the tfds dataset at its own size; folders of small images and of
# photos): launch.train as configured (crop.policy=auto), for folders launch.train with the
# ImageNet crop policy (kmodels' default before auto), and launch.plain_keras; the same
# ShallowNet, Adam, batch, 3 epochs and seed, float32 everywhere. With several SEEDS, each
# cell is the mean over them (one test split of 1,000 pictures moves 1-2 points by seed).
# Prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/against_plain_keras}"
PY="${2:-.venv/bin/python}"
SEEDS="${SEEDS:-0}"
KINDS="${KINDS:-tfds small-mixed photos}"
export PYTHONPATH="$PWD"
mkdir -p "$OUT"

accuracy_of_run() {  # accuracy_of_run WORKDIR
  "$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['test_accuracy'])" "$1/metrics.json"
}

plain_keras_accuracy() {  # plain_keras_accuracy LOG CONFIG_FLAGS...
  local log="$1"; shift
  "$PY" -m launch.plain_keras "$@" 2>"$log" | tail -n 1 |
    "$PY" -c "import json,sys; print(json.load(sys.stdin)['test_accuracy'])"
}

RECIPE=(--config.model.name=shallownet --config.train.epochs=3 --config.train.batch_size=32
  --config.train.optimizer.name=adam --config.train.optimizer.learning_rate=1e-3
  --config.precision=float32)

mean_percent() { "$PY" -c "import sys; v = [float(x) for x in sys.argv[1:]]; print(100 * sum(v) / len(v))" "$@"; }

tfds_kind() {  # tfds_kind NAME: a prepared fixed-size tfds dataset at its own size
  local name="$1" seed auto=() plain=()
  for seed in $SEEDS; do
    local common=(--config=configs/base.py "--config.dataset.name=$name" "${RECIPE[@]}"
      "--config.train.seed=$seed")
    rm -rf "$OUT/run-$name-tfds-$seed"
    "$PY" -m launch.train "${common[@]}" "--workdir=$OUT/run-$name-tfds-$seed" \
        >"$OUT/$name-tfds-$seed.log" 2>&1
    auto+=("$(accuracy_of_run "$OUT/run-$name-tfds-$seed")")
    plain+=("$(plain_keras_accuracy "$OUT/$name-tfds-plain-$seed.log" "${common[@]}")")
  done
  printf '| %s (tfds) at its own size | %.2f %% (no crop at own size) | - | %.2f %% |\n' \
      "$name" "$(mean_percent "${auto[@]}")" "$(mean_percent "${plain[@]}")"
}

kind() {  # kind NAME SIZE WRITE_FLAGS...
  local name="$1" size="$2"; shift 2
  local folder="$OUT/$name" seed auto=() imagenet=() plain=() policy
  [ -d "$folder/train" ] || "$PY" -m launch.write_image_folder --dataset=fashion_mnist \
      --out="$folder" --train_examples=6000 --test_examples=1000 "$@" >/dev/null 2>&1
  for seed in $SEEDS; do
    local common=(--config=configs/base.py --config.dataset.name=image_folder
      "--config.dataset.image_dir=$folder" "--config.dataset.image_size=$size"
      --config.dataset.channels=1 "${RECIPE[@]}" "--config.train.seed=$seed")
    local run="$OUT/run-$name-$seed"
    rm -rf "$run-auto" "$run-imagenet"
    "$PY" -m launch.train "${common[@]}" "--workdir=$run-auto" >"$run-auto.log" 2>&1
    auto+=("$(accuracy_of_run "$run-auto")")
    "$PY" -m launch.train "${common[@]}" --config.dataset.crop.policy=imagenet \
        "--workdir=$run-imagenet" >"$run-imagenet.log" 2>&1
    imagenet+=("$(accuracy_of_run "$run-imagenet")")
    plain+=("$(plain_keras_accuracy "$run-plain.log" "${common[@]}")")
    policy="$(grep -o 'crop.policy=auto -> [a-z]*' "$run-auto.log" | head -n 1 | cut -d' ' -f3)"
  done
  printf '| %s folder at %s px | %.2f %% (%s) | %.2f %% | %.2f %% |\n' "$name" "$size" \
      "$(mean_percent "${auto[@]}")" "$policy" "$(mean_percent "${imagenet[@]}")" \
      "$(mean_percent "${plain[@]}")"
}

echo "| data, ShallowNet, 3 epochs | kmodels default (auto picks) | kmodels, ImageNet crops | plain Keras |"
echo "|---|---|---|---|"
for kind_name in $KINDS; do
  case "$kind_name" in
    tfds) tfds_kind "${TFDS_DATASET:-fashion_mnist}" ;;
    small-mixed) kind small-mixed 32 --mixed ;;
    photos) kind photos 128 --photo_size=160x120 ;;
    *) echo "unknown kind $kind_name (tfds, small-mixed, photos)" >&2; exit 2 ;;
  esac
done
