r"""Trains the same network by every path (three Keras styles, custom loop, Estimators).

  python -m launch.compare --config=configs/compare_fashion_mnist.py --workdir=runs/compare
  python -m launch.compare --config=configs/compare_fashion_mnist.py --workdir=runs/c \
      --config.compare.paths=sequential,estimator --config.train.epochs=1

Writes comparison.md, comparison.csv and comparison.png into the workdir, one
subdirectory per path with that run's outputs and log, and prints the table.
"""

import kmodels  # noqa: F401  (first: picks Keras 2 before TensorFlow is imported)

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from kmodels import compare, validation
from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Comparison config (configs/compare_*.py).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the comparison's outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.INFO)
  with common.user_errors_exit():
    config = _CONFIG.value
    validation.validate(config)  # each path re-checks its own trainer
    overrides = [f"--config.{key}={value}" for key, value in
                 config_flags.get_override_values(flags.FLAGS["config"]).items()]
    compare.run(config, config_flags.get_config_filename(flags.FLAGS["config"]), overrides,
                _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
