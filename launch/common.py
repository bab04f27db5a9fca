"""What every launcher does around its one library call."""

import contextlib
import sys

from absl import logging

from kmodels.errors import UserError


@contextlib.contextmanager
def user_errors_exit():
  """Turns a UserError into its message on stderr and exit status 2, without a traceback."""
  try:
    yield
  except UserError as e:
    logging.flush()
    sys.stderr.write(f"\nkmodels: error: {e}\n")
    sys.exit(2)


def log_devices():
  import tensorflow as tf  # after kmodels has chosen the Keras version
  logging.info("TensorFlow %s; devices: %s", tf.__version__,
               ", ".join(d.name for d in tf.config.list_logical_devices()))
