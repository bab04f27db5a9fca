r"""kmodels' step-memory estimate beside a training step's measured memory.

(kmodels/docs/measurements.md "Step-memory calibration")

  python -m launch.step_memory --model=resnet50 --image_size=224 --batches=8,32

For each batch size, in a fresh process (peak memory only grows): the estimate
(kmodels.memory) and the growth of the process's peak resident memory over one epoch of
two `fit` steps on random images. The slope between two batch sizes is the measured
memory per example, what the estimate's per-example part is compared with.
"""

import json
import resource
import subprocess
import sys

from absl import app
from absl import flags

from launch import common

_MODEL = flags.DEFINE_string("model", "resnet50", "A registry model name.")
_SIZE = flags.DEFINE_integer("image_size", 224, "Image side in pixels (3 channels).", lower_bound=1)
_BATCHES = flags.DEFINE_list("batches", ["8", "32"], "Batch sizes, one process each.")
_PRECISION = flags.DEFINE_string("precision", "float32", "float32 or mixed_bfloat16.")
_ONE = flags.DEFINE_integer("one",
                            None,
                            "Internal: measure this batch size in this process.",
                            lower_bound=1)


def _measure(batch):
  from kmodels import runtime  # pylint: disable=g-import-not-at-top
  runtime.configure()
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from kmodels import memory, models, precision  # pylint: disable=g-import-not-at-top
  with precision.policy(_PRECISION.value):
    model = models.build_model(_MODEL.value, (_SIZE.value, _SIZE.value, 3), 10)
    models.compile_classifier(model, _MODEL.value, tf.keras.optimizers.Adam(1e-3))
  step = memory.estimate(model)
  images = np.random.rand(2 * batch, _SIZE.value, _SIZE.value, 3).astype(np.float32)
  labels = np.random.randint(0, 10, 2 * batch)
  before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  model.fit(images, labels, batch_size=batch, epochs=1, verbose=0)
  grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
  print(
      json.dumps({
          "batch": batch,
          "estimate_bytes": step.bytes(batch),
          "per_example_estimate": step.per_example_bytes,
          "peak_growth": grown
      }))


def main(argv):
  del argv
  if _ONE.value:
    _measure(_ONE.value)
    return
  rows = []
  for batch in map(int, _BATCHES.value):
    proc = subprocess.run([
        sys.executable, "-m", "launch.step_memory", f"--one={batch}", f"--model={_MODEL.value}",
        f"--image_size={_SIZE.value}", f"--precision={_PRECISION.value}"
    ],
                          capture_output=True,
                          text=True,
                          check=True)
    rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
  first, last = rows[0], rows[-1]
  slope = (last["peak_growth"] - first["peak_growth"]) / (last["batch"] - first["batch"])
  print(f"| {_MODEL.value} | {_SIZE.value} | {_PRECISION.value} | "
        f"{first['per_example_estimate'] / 1e6:.1f} | {slope / 1e6:.1f} | "
        f"{first['per_example_estimate'] / slope:.2f} |")


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
