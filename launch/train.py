r"""Trains and evaluates one experiment config.

  python -m launch.train --config=configs/fashion_mnist_quickstart.py --workdir=runs/quick
  python -m launch.train --config=configs/cifar_googlenet.py --workdir=runs/g \
      --config.train.epochs=5 --config.precision=mixed_bfloat16

Re-running the same command on the same workdir resumes from the last completed epoch.
On Vertex AI (AIP_MODEL_DIR set) --workdir may be omitted; see kmodels/workdir.py.
"""

from absl import app
from absl import flags

from kmodels import training, workdir
from launch import common

_CONFIG, _WORKDIR = common.define_config_and_workdir(
    "Experiment config file (configs/*.py).",
    "Directory for every output of the run. On Vertex AI it may be omitted: the directory "
    "holding AIP_MODEL_DIR (export, checkpoints and TensorBoard logs go to the AIP_* dirs).",
    default_workdir=workdir.vertex_default_root())
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "If --workdir holds a run of another experiment, delete its outputs "
    "and start over (without it, that is refused).")


def main(argv):
  common.start(argv)
  # Devices are logged with the strategy: multi_worker must be created before TF starts.
  with common.user_errors_exit():
    training.train_and_evaluate(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
