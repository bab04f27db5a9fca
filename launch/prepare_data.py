r"""Prepares data for training without a network: a tfds dataset, or an image folder.

  python -m launch.prepare_data --dataset=fashion_mnist \
      --archive_dir=/usr/share/datasets/fashion-mnist
  python -m launch.prepare_data --dataset=imagenet2012 --archive_dir=DIR_WITH_THE_TARS
  python -m launch.prepare_data --dataset=image_folder --image_dir=photos/ \
      --data_dir=gs://bucket/photos-records

tfds datasets: copy the dataset's original archives (the error message lists their names)
into one directory and point --archive_dir at it. Image folders (DIR/<split>/<class>/*.jpg):
the good files are written as TFRecord shards plus an index into --data_dir, and training
reads them with --config.dataset.image_dir=DATA_DIR (the fast form for many small files
on a bucket).
"""

from absl import app
from absl import flags
from absl import logging

from configs import base
from kmodels.data import image_folder, preparation, sources
from kmodels.errors import UserError
from launch import common

_DATASET = flags.DEFINE_string(
    "dataset", None, "tfds name (fashion_mnist, mnist, cifar10, "
    "imagenet2012, ...) or image_folder.")
_ARCHIVE_DIR = flags.DEFINE_string("archive_dir", None, "tfds: directory with the original files.")
_IMAGE_DIR = flags.DEFINE_string("image_dir", None, "image_folder: DIR/<split>/<class>/*.jpg.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "tfds data_dir (default: tfds' default); "
    "image_folder: where the records go (required).")
_MAX_BAD_FRACTION = common.define_fraction(
    "max_bad_fraction", 0.01, "image_folder: refuse when "
    "more than this share of files is unreadable.")
flags.mark_flags_as_required(["dataset"])


def _prepare_image_folder():
  if not _IMAGE_DIR.value or not _DATA_DIR.value:
    raise UserError("--dataset=image_folder needs --image_dir=DIR (DIR/<split>/<class>/*.jpg) "
                    "and --data_dir=OUT (where the records go).")
  dataset_config = base.get_config().dataset
  dataset_config.max_bad_fraction = _MAX_BAD_FRACTION.value
  index = image_folder.write_records(_IMAGE_DIR.value, _DATA_DIR.value, dataset_config)
  splits = ", ".join(f"{k}: {v['examples']} images ({v['bad_files']} unreadable skipped)"
                     for k, v in index["splits"].items())
  logging.info(
      "Wrote %d classes as records in %s (%s). Train on them with "
      "--config.dataset.name=image_folder --config.dataset.image_dir=%s", len(index["classes"]),
      _DATA_DIR.value, splits, _DATA_DIR.value)


def _prepare_tfds():
  if not _ARCHIVE_DIR.value:
    raise UserError(f"--dataset={_DATASET.value} needs --archive_dir=DIR holding its original "
                    "download files.")
  builder = preparation.prepare_offline(_DATASET.value, _ARCHIVE_DIR.value, _DATA_DIR.value)
  splits = ", ".join(f"{k}: {v.num_examples}" for k, v in builder.info.splits.items())
  logging.info("Prepared %s in %s (%s).", builder.name, builder.data_dir, splits)


def main(argv):
  common.start(argv)
  with common.user_errors_exit():
    if _DATASET.value == sources.IMAGE_FOLDER:
      _prepare_image_folder()
    else:
      _prepare_tfds()


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
