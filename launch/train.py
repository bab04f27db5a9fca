r"""Trains and evaluates one experiment config.

  python -m launch.train --config=configs/fashion_mnist_quickstart.py --workdir=runs/quick
  python -m launch.train --config=configs/cifar_googlenet.py --workdir=runs/g \
      --config.train.epochs=5 --config.precision=mixed_bfloat16

Re-running the same command on the same workdir resumes from the last completed epoch.
"""

import kmodels  # noqa: F401  (first: picks Keras 2 before TensorFlow is imported)

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from kmodels import training
from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for every output of the run.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.INFO)
  # Devices are logged with the strategy: multi_worker must be created before TF starts.
  with common.user_errors_exit():
    training.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
