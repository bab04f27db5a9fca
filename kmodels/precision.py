"""Mixed precision policy, set for the duration of one run."""

import contextlib

from absl import logging
import tensorflow as tf

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")

# Measured (BUILD_NOTES "Speed"): CPUs have no fast float16 kernels, so a GPU config run
# on a CPU-only machine as it stands trains ~100x slower than with bfloat16.
FLOAT16_WITHOUT_GPU = (
    "precision=mixed_float16 on a machine without a GPU: CPUs have no fast float16 kernels "
    "(MiniGoogLeNet trained at 1.4 images/s against 131 with mixed_bfloat16 on 2 CPU "
    "cores). Unless this run is meant for a GPU, pass --config.precision=mixed_bfloat16 "
    "(CPUs with AVX512_BF16/AMX, TPUs) or float32.")


@contextlib.contextmanager
def policy(name):
  """Sets the global Keras dtype policy inside the block and restores the old one after.

  The policy is process-global in Keras, so restoring it keeps one run (or one test)
  from changing the precision of the next one in the same process.
  """
  if name == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
    logging.warning(FLOAT16_WITHOUT_GPU)
  previous = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy(previous)
