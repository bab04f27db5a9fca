r"""Measures training speed for any training config, against the CIFAR styles tutorial's reference
path.

  python -m launch.benchmark --config=configs/cifar_googlenet.py --workdir=runs/bench \
      --config.dataset.source=synthetic --config.precision=mixed_bfloat16

Prints a table and writes benchmark.json into the workdir: steady-state training images/s
and step time (warm-up excluded), the input pipeline alone, time to first step from
process start, peak RSS, forward FLOPs per image and the fraction of this machine's
measured matmul peak, and (--reference) the CIFAR styles tutorial's ImageDataGenerator + model.fit
path for the same model and batch with the ratios, the reference's fraction of the float32 peak
and the ratio's ceiling on this machine (kmodels at 100 % of its precision's peak).
--input_only measures the input pipeline alone against decoding the same files alone
(an image folder or a variable-size tfds dataset):

  python -m launch.benchmark --input_only --config=configs/base.py --workdir=runs/input \
      --config.dataset.name=image_folder --config.dataset.image_dir=photos \
      --config.dataset.image_size=224 --config.dataset.cache=none

--synthetic_batch feeds one in-memory batch (no input pipeline); --op_profile traces more
steps with TensorFlow's profiler and prints each op type's share of kernel time (the trace
is in WORKDIR/op_profile for TensorBoard).
"""

from absl import app
from absl import flags

from kmodels import reporting, storage
from kmodels.tools import benchmark
import launch  # its PROCESS_START: before the imports, so time to first step counts them
from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir("Training config to measure (configs/*.py).",
                                                     "Directory for benchmark.json.")
_STEPS = flags.DEFINE_integer("steps",
                              30,
                              "Timed training steps (after as many warm-up).",
                              lower_bound=1)
_PIPELINE_BATCHES = flags.DEFINE_integer("pipeline_batches",
                                         50,
                                         "Batches for input timing.",
                                         lower_bound=1)
_SYNTHETIC_BATCH = flags.DEFINE_bool("synthetic_batch", False,
                                     "Train on one in-memory batch: no input pipeline.")
_REFERENCE = flags.DEFINE_bool(
    "reference", True, "Also measure the CIFAR styles tutorial's path "
    "(ImageDataGenerator + model.fit).")
_INPUT_ONLY = flags.DEFINE_bool(
    "input_only", False, "Measure only the input pipeline, against decoding the same files "
    "alone (input_images_per_second, decode_limit_images_per_second); no training.")
_OP_PROFILE = flags.DEFINE_bool("op_profile", False,
                                "Also trace training and report each op type's time share.")


def _table(results):
  rows = [(key, value) for key, value in results.items() if not isinstance(value, dict)]
  for name in ("peak_gflops", "op_time_shares"):
    rows += [(f"{name}[{k}]", v) for k, v in results.get(name, {}).items()]
  width = max(len(k) for k, _ in rows)
  return "\n".join(
      f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}" for k, v in rows)


def main(argv):
  common.start(argv)
  with common.user_errors_exit():
    if _INPUT_ONLY.value:
      results = benchmark.input_only(_CONFIG.value, batches=_PIPELINE_BATCHES.value)
    else:
      profile_dir = storage.join(_WORKDIR.value, "op_profile") if _OP_PROFILE.value else None
      results = benchmark.run(_CONFIG.value,
                              steps=_STEPS.value,
                              pipeline_batches=_PIPELINE_BATCHES.value,
                              synthetic_batch=_SYNTHETIC_BATCH.value,
                              with_reference=_REFERENCE.value,
                              process_start=launch.PROCESS_START,
                              op_profile_dir=profile_dir)
  storage.makedirs(_WORKDIR.value)
  reporting.write_json(storage.join(_WORKDIR.value, "benchmark.json"), results)
  print(_table(results), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
