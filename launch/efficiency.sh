#!/usr/bin/env bash
# Where a training step's share of the machine's matmul peak goes, per model, in one run
# (README Results, "Efficiency"; launch.benchmark measures each row).
#   bash launch/efficiency.sh [OUT_DIR] [PYTHON]
# Per model, float32, on real Fashion-MNIST / synthetic CIFAR-sized data:
#   pipeline     the configured trainer on the real input pipeline
#   in memory    one batch repeated (--synthetic_batch): the input pipeline's cost removed
#   16 per call  the same with train.steps_per_execution=16: Python's per-step dispatch removed
# and the op types the in-memory step spends its kernel time in (--op_profile). Prints a
# table of the fraction of the float32 matmul peak (measured in each run) and those shares.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-/tmp/efficiency}"
PY="${2:-.venv/bin/python}"
export PYTHONPATH="$PWD"
mkdir -p "$OUT"

field() {  # field BENCHMARK_DIR KEY
  "$PY" -c "import json,sys; print(json.load(open(sys.argv[1] + '/benchmark.json'))[sys.argv[2]])" "$1" "$2"
}

shares() {  # shares BENCHMARK_DIR: the three largest op types' kernel time shares
  "$PY" -c "
import json, sys
shares = json.load(open(sys.argv[1] + '/benchmark.json')).get('op_time_shares', {})
print(', '.join(f'{k} {v:.0%}' for k, v in sorted(shares.items(), key=lambda kv: -kv[1])[:3]))
" "$1"
}

model() {  # model NAME CONFIG_FLAGS...
  local name="$1"; shift
  local flags=("$@" --config.precision=float32 --reference=false --steps=40)
  "$PY" -m launch.benchmark "${flags[@]}" "--workdir=$OUT/$name-pipeline" >"$OUT/$name-pipeline.log" 2>&1
  "$PY" -m launch.benchmark "${flags[@]}" --synthetic_batch --op_profile \
      "--workdir=$OUT/$name-memory" >"$OUT/$name-memory.log" 2>&1
  "$PY" -m launch.benchmark "${flags[@]}" --synthetic_batch \
      --config.train.steps_per_execution=16 "--workdir=$OUT/$name-per-call" >"$OUT/$name-per-call.log" 2>&1
  printf '| %s | %.1f | %.1f %% | %.1f %% | %.1f %% | %s |\n' "$name" \
      "$(field "$OUT/$name-pipeline" peak_gflops | "$PY" -c "import ast,sys; print(ast.literal_eval(sys.stdin.read())['float32'])")" \
      "$("$PY" -c "print(100 * $(field "$OUT/$name-pipeline" fraction_of_peak))")" \
      "$("$PY" -c "print(100 * $(field "$OUT/$name-memory" fraction_of_peak))")" \
      "$("$PY" -c "print(100 * $(field "$OUT/$name-per-call" fraction_of_peak))")" \
      "$(shares "$OUT/$name-memory")"
}

echo "| model, float32 | float32 peak GFLOP/s | pipeline | in memory | 16 steps per call | kernel time (in memory) |"
echo "|---|---|---|---|---|---|"
model quickstart-fastcnn --config=configs/fashion_mnist_quickstart.py
model minigooglenet --config=configs/cifar_googlenet.py --config.dataset.source=synthetic
