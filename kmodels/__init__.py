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

from kmodels.errors import UserError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["UserError", "__version__"]
