r"""Trains the same network by every path (three Keras styles, custom loop, Estimators).

  python -m launch.compare --config=configs/compare_fashion_mnist.py --workdir=runs/compare
  python -m launch.compare --config=configs/compare_fashion_mnist.py --workdir=runs/c \
      --config.compare.paths=sequential,estimator --config.train.epochs=1

Writes comparison.md, comparison.csv and comparison.png into the workdir, one
subdirectory per path with that run's outputs and log, and prints the table.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from kmodels import validation
from kmodels.tools import compare
from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir("Comparison config (configs/compare_*.py).",
                                                     "Directory for the comparison's outputs.")


def main(argv):
  common.start(argv)
  with common.user_errors_exit():
    config = _CONFIG.value
    validation.validate(config)  # each path re-checks its own trainer
    overrides = [
        f"--config.{key}={value}"
        for key, value in config_flags.get_override_values(flags.FLAGS["config"]).items()
    ]
    compare.run(config, config_flags.get_config_filename(flags.FLAGS["config"]), overrides,
                _WORKDIR.value)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
