"""kmodels: train Keras image classifiers the same way on a CPU, GPUs, workers or a TPU.

Importing kmodels changes nothing in the process; `kmodels.runtime.configure()` (which the
launchers and tests call first) picks Keras 2 and sets TensorFlow up before it starts.
"""

from kmodels.errors import UserError

__version__ = "0.2.0"
__all__ = ["UserError", "__version__"]
