"""The process settings kmodels runs under, made by `configure()` before TensorFlow starts.

Nothing in kmodels changes the process when it is imported. Entry points call
`configure()` first: the launchers through `launch/__init__.py`, the tests through
`tests/__init__.py`; a script of your own calls `kmodels.runtime.configure()` before it
imports TensorFlow or another kmodels module.
"""

import os
import sys

# TensorFlow's gs:// filesystem reads its retry settings once, when TensorFlow is imported.
# Its default (10 retries, back-off from 1 s to 32 s) reports unreachable storage after
# more than 3 minutes; this caps it at about 30 s. Users' own settings win.
GCS_RETRY_DEFAULTS = {
    "GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "500000",
    "GCS_RETRY_CONFIG_MAX_DELAY_TIME_US": "8000000",
    "GCS_RETRY_CONFIG_MAX_RETRIES": "5"
}
ENVIRONMENT = {
    # The whole package speaks the Keras 2 API through tf.keras. On TensorFlow >= 2.16 that
    # API lives in the tf-keras package and is chosen only when this is set before
    # TensorFlow is first imported.
    "TF_USE_LEGACY_KERAS": "1",
    # TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) hides the progress
    # output users came for; real errors still print.
    "TF_CPP_MIN_LOG_LEVEL": "2",
    **GCS_RETRY_DEFAULTS,
}


def configure():
  """Sets the environment, then the TensorFlow, tfds and matplotlib settings. Idempotent."""
  if "tensorflow" in sys.modules and "TF_USE_LEGACY_KERAS" not in os.environ:
    raise RuntimeError("kmodels.runtime.configure() must run before TensorFlow is imported "
                       "(it picks Keras 2 through TF_USE_LEGACY_KERAS=1): call it first.")
  for name, value in ENVIRONMENT.items():
    os.environ.setdefault(name, value)
  _matplotlib_writes_files()
  _autograph_leaves_tf_keras_alone()
  _tfds_reads_only_data_dir()


def _matplotlib_writes_files():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")  # files only: training machines have no display


def _autograph_leaves_tf_keras_alone():
  """Keeps AutoGraph from rewriting tf_keras' own code, as TF >= 2.16 does.

  TF 2.15's AutoGraph skips the module prefix "keras" but not "tf_keras", where the
  Keras 2 of this package lives. It then converted Keras' whole train step, AST by AST,
  each time a function was traced: 26 s of a 28 s first `fit` call for a small CNN here
  (cProfile: ast.generic_visit, autograph.pyct.transformer), ~1 s once skipped.
  """
  from tensorflow.python.autograph.core import config  # pylint: disable=g-direct-tensorflow-import,g-import-not-at-top
  if not any(
      rule.matches("tf_keras")
      for rule in config.CONVERSION_RULES
      if isinstance(rule, config.DoNotConvert)):
    config.CONVERSION_RULES += (config.DoNotConvert("tf_keras"),)


def _tfds_reads_only_data_dir():
  """tfds 4.9.4 (full lane) looks for ready-made copies of every dataset on Google's public
  bucket gs://tfds-data; newer tfds no longer does. Here that was a useless request to
  Google (and a GCE metadata-server lookup) on every load; kmodels reads only data_dir."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.core.utils.gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access
