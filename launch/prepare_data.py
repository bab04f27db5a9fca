r"""Prepares a tfds dataset offline from its original download files.

  python -m launch.prepare_data --dataset=fashion_mnist \
      --archive_dir=/usr/share/datasets/fashion-mnist

For machines and clusters without internet: copy the dataset's original archives (the
error message lists their names) into one directory and point --archive_dir at it.
"""

import kmodels  # noqa: F401  (first: picks Keras 2 before TensorFlow is imported)

from absl import app
from absl import flags
from absl import logging

from kmodels import preparation
from launch import common

_DATASET = flags.DEFINE_string("dataset", None, "tfds name, e.g. fashion_mnist, mnist, cifar10.")
_ARCHIVE_DIR = flags.DEFINE_string("archive_dir", None, "Directory with the original files.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data_dir; default: tfds' default.")
flags.mark_flags_as_required(["dataset", "archive_dir"])


def main(argv):
  common.start(argv)
  with common.user_errors_exit():
    builder = preparation.prepare_offline(_DATASET.value, _ARCHIVE_DIR.value, _DATA_DIR.value)
  splits = ", ".join(f"{k}: {v.num_examples}" for k, v in builder.info.splits.items())
  logging.info("Prepared %s in %s (%s).", builder.name, builder.data_dir, splits)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
