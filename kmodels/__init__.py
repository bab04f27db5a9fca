"""kmodels: train Keras image classifiers the same way on a CPU, GPUs, workers or a TPU.

The whole package speaks the Keras 2 API through `tf.keras`. On TensorFlow >= 2.16 that
API lives in the `tf-keras` package and is only chosen when `TF_USE_LEGACY_KERAS=1` is set
before TensorFlow is first imported, so this must run before anything imports TensorFlow.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) hides the progress
# output users came for; real errors still print.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow's gs:// filesystem reads its retry settings once, when TensorFlow is imported.
# Its default (10 retries, back-off from 1 s to 32 s) reports unreachable storage after
# more than 3 minutes; this caps it at about 30 s. Users' own settings win.
GCS_RETRY_DEFAULTS = {"GCS_RETRY_CONFIG_INIT_DELAY_TIME_US": "500000",
                      "GCS_RETRY_CONFIG_MAX_DELAY_TIME_US": "8000000",
                      "GCS_RETRY_CONFIG_MAX_RETRIES": "5"}
for _name, _value in GCS_RETRY_DEFAULTS.items():
  os.environ.setdefault(_name, _value)



def _autograph_leaves_tf_keras_alone():
  """Keeps AutoGraph from rewriting tf_keras' own code, as TF >= 2.16 does.

  TF 2.15's AutoGraph skips the module prefix "keras" but not "tf_keras", where the
  Keras 2 of this package lives. It then converted Keras' whole train step, AST by AST,
  each time a function was traced: 26 s of a 28 s first `fit` call for a small CNN here
  (cProfile: ast.generic_visit, autograph.pyct.transformer), ~1 s once skipped.
  """
  from tensorflow.python.autograph.core import config  # pylint: disable=g-direct-tensorflow-import
  if not any(rule.matches("tf_keras") for rule in config.CONVERSION_RULES
             if isinstance(rule, config.DoNotConvert)):
    config.CONVERSION_RULES += (config.DoNotConvert("tf_keras"),)


_autograph_leaves_tf_keras_alone()

from kmodels.errors import UserError  # noqa: E402

__version__ = "0.2.0"
__all__ = ["UserError", "__version__"]
