"""Mixed precision policy, set for the duration of one run."""

import contextlib

import tensorflow as tf

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@contextlib.contextmanager
def policy(name):
  """Sets the global Keras dtype policy inside the block and restores the old one after.

  The policy is process-global in Keras, so restoring it keeps one run (or one test)
  from changing the precision of the next one in the same process.
  """
  previous = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy(previous)
