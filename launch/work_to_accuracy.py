r"""Training work (FLOPs) against test accuracy for finished runs, side by side.

  python -m launch.work_to_accuracy --workdir=runs/quickstart --workdir=runs/fast

Prints one row per run: model, forward MFLOPs per image (TensorFlow's profiler), images
trained, training TFLOPs (3 x forward per image, plus precise BatchNorm's forward
passes), test accuracy, and the work as a share of the first run's. Unlike seconds, the
work of a run is the same on every machine (kmodels/tools/work.py).
"""

from absl import app
from absl import flags

from kmodels.tools import work
from launch import common

_WORKDIRS = flags.DEFINE_multi_string(
    "workdir", None, "A finished run's workdir; repeat "
    "the flag to compare runs (ratios to the first).")
flags.mark_flag_as_required("workdir")


def main(argv):
  common.start(argv)
  with common.user_errors_exit():
    rows = [work.run_work(path) for path in _WORKDIRS.value]
  first = rows[0]["train_tflops"]
  print(f"{'run':<32} {'model':<14} {'MFLOPs/img':>10} {'images':>10} {'TFLOPs':>8} "
        f"{'x first':>7} {'accuracy':>8}")
  for row in rows:
    print(
        f"{row['workdir'][-32:]:<32} {row['model']:<14} "
        f"{row['forward_mflops_per_image']:>10.2f} {row['train_images']:>10,} "
        f"{row['train_tflops']:>8.4g} {row['train_tflops'] / first:>7.2f} "
        f"{row['test_accuracy']:>8.2%}",
        flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
