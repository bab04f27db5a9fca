"""tensorflow-datasets builders: checks, offline preparation, damaged-file explanations.

Archives for offline preparation are found by the builder's own registered URLs; a machine
that cannot reach the download hosts is told so in seconds, with the prepare_data command.
"""

import contextlib
import os
import sys
import tarfile
import threading
import time
import urllib.parse
import zlib
from typing import Optional

from absl import logging
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from kmodels import netcheck, progress, storage
from kmodels.errors import UserError, first_line

TESTED_DATASETS = ("fashion_mnist", "mnist", "cifar10")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# How long to wait for a download host before declaring the machine offline. Without
# this check tfds retries for minutes (204 s measured here) before giving up.
_REACHABILITY_TIMEOUT_SECONDS = 5


def get_builder(name, data_dir=None):
  """The tfds builder for `name`, with a clear error for unknown or non-image datasets."""
  if data_dir and storage.has_scheme(data_dir):
    # tfds lists DATA_DIR/NAME for prepared versions and copes with a missing local
    # folder, but not with gfile's NotFoundError for a prefix with no objects in a bucket.
    storage.makedirs(storage.join(data_dir, name.split(":")[0].split("/")[0]))
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError as e:
    raise UserError(
        f"Unknown dataset.name {name!r}. kmodels is tested with {', '.join(TESTED_DATASETS)};"
        " any tfds image classification dataset with 'image' and 'label' features works "
        "(see `tfds.list_builders()`).") from e
  _check_features(name, builder.info.features)
  return builder


def _check_features(name, features):
  """Raises UserError unless `features` describe images with class labels."""
  if "image" not in features or "label" not in features:
    raise UserError(f"Dataset {name!r} has features {sorted(features)}; kmodels needs an "
                    "'image' and a 'label' feature (an image classification dataset).")
  shape = tuple(features["image"].shape)
  if len(shape) != 3:  # varying sizes are fine: dataset.image_size says what to train at
    raise UserError(f"Dataset {name!r} has images of shape {shape}; kmodels trains on "
                    "images (height, width, channels), of any size.")
  if getattr(features["label"], "num_classes", None) is None:
    raise UserError(f"Dataset {name!r} has a {type(features['label']).__name__} label; "
                    "kmodels needs a ClassLabel (a class index and a number of classes).")


# The raw class attribute: tfds' logging decorator makes a new object on every lookup.
_REAL_DOWNLOAD_AND_PREPARE = vars(tfds.core.DatasetBuilder)["download_and_prepare"]


def is_prepared(builder):
  return storage.exists(storage.join(str(builder.data_dir), "dataset_info.json"))


def _download_is_mocked():
  """True under `tfds.testing.mock_data`, whose download_and_prepare is a no-op.

  There is then nothing on disk to find and nothing to download, so the offline checks
  below must not run.
  """
  return vars(tfds.core.DatasetBuilder)["download_and_prepare"] is not _REAL_DOWNLOAD_AND_PREPARE


def expected_archive_files(builder):
  """File names tfds looks for in a manual dir: the basenames of its download URLs."""
  return sorted(info.filename for info in (builder.url_infos or {}).values() if info.filename)


def _archives_wanted(builder):
  """What the archive directory must hold: the file names, or the builder's instructions
  (manual-download datasets such as imagenet2012 register no download URLs)."""
  files = expected_archive_files(builder)
  if files:
    return ", ".join(files)
  instructions = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None) or ""
  return " ".join(instructions.split()) or "its original download files (see its tfds page)"


def _download_hosts(builder):
  return sorted({urllib.parse.urlparse(url).hostname for url in builder.url_infos})


def _offline_help(builder):
  name = builder.name
  lines = [
      f"Dataset {name!r} is not prepared in "
      f"{storage.dirname(storage.dirname(str(builder.data_dir)))} and cannot be downloaded "
      "from here.",
      "Prepare it offline from its original download files "
      f"({_archives_wanted(builder)}):",
      f"  python -m launch.prepare_data --dataset={name} --archive_dir=DIR_WITH_THOSE_FILES",
  ]
  if name == "fashion_mnist":
    lines.append("On Debian/Ubuntu the files come from a package: apt-get install -y "
                 f"dataset-fashion-mnist (then --archive_dir={DEBIAN_FASHION_MNIST}).")
  lines.append("Or use --config.dataset.source=synthetic for a smoke run on random data.")
  return "\n".join(lines)


@contextlib.contextmanager
def preparing(builder, every_seconds=progress.EVERY_SECONDS):
  """Says how far tfds' preparation is where its output is read: tfds' own bars (tqdm)
  only make sense on a terminal, so elsewhere they are off and a line every
  `every_seconds` gives the record files written so far."""
  if not sys.stderr.isatty():
    tfds.disable_progress_bar()
  root = os.path.dirname(builder.data_dir)  # <data_dir>/<name>: tfds writes beside it
  start, done = time.monotonic(), threading.Event()

  def heartbeat():
    while not done.wait(every_seconds):
      written = sum(
          os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)
      logging.info("Preparing %s: %.0f MB written so far, %s.", builder.name, written / 1e6,
                   progress.duration(time.monotonic() - start))

  logging.info("Preparing %s %s into %s (tfds writes its record files once).", builder.name,
               builder.version, builder.data_dir)
  thread = threading.Thread(target=heartbeat, daemon=True)
  if not storage.has_scheme(root):  # a bucket's size is not worth listing every minute
    thread.start()
  try:
    yield
  finally:
    done.set()
  logging.info("Prepared %s in %s.", builder.name, progress.duration(time.monotonic() - start))


def ensure_prepared(dataset_config):
  """Returns a builder whose data is on disk, downloading it when allowed and possible."""
  if dataset_config.data_dir:
    storage.check_reachable(dataset_config.data_dir, "dataset.data_dir")
  builder = get_builder(dataset_config.name, dataset_config.data_dir)
  if is_prepared(builder) or _download_is_mocked():
    return builder
  if not dataset_config.download:
    raise UserError(_offline_help(builder) + "\n(dataset.download is False.)")
  unreachable = [
      h for h in _download_hosts(builder)
      if not netcheck.reachable(h, 443, _REACHABILITY_TIMEOUT_SECONDS)
  ]
  if unreachable:
    raise UserError(_offline_help(builder) + f"\n(No connection to {', '.join(unreachable)}.)")
  try:
    with preparing(builder):
      builder.download_and_prepare()
  except OSError as e:
    raise UserError(f"Downloading {builder.name!r} failed: {e}\n" + _offline_help(builder)) from e
  return builder


def prepare_offline(name: str, archive_dir: str, data_dir: Optional[str] = None):
  """Prepares `name` from its original download files in `archive_dir`, with no network.

  Returns the prepared builder. Raises UserError listing the expected file names when
  some are missing.
  """
  if data_dir:
    storage.check_reachable(data_dir, "--data_dir")
  builder = get_builder(name, data_dir)
  expected = expected_archive_files(builder)
  if not os.path.isdir(archive_dir):
    raise UserError(f"--archive_dir {archive_dir!r} is not a directory. It must hold the "
                    f"original download files of {name!r}: {_archives_wanted(builder)}.")
  missing = [f for f in expected if not os.path.isfile(os.path.join(archive_dir, f))]
  if missing:
    raise UserError(
        f"{archive_dir} lacks {', '.join(missing)}. To prepare {name!r} offline it must "
        f"hold: {', '.join(expected)} (found: {_listing(archive_dir)}).")
  try:
    with preparing(builder):
      builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
          manual_dir=archive_dir))
  except AssertionError as e:  # tfds' own check of a manual dir: empty, or files missing
    raise UserError(f"{archive_dir} does not hold what {name!r} is prepared from: "
                    f"{_archives_wanted(builder)} (found: {_listing(archive_dir)}).") from e
  except NonMatchingChecksumError as e:
    raise UserError(
        f"The files in {archive_dir} are not byte-identical to the archives tfds "
        f"{tfds.__version__} registered for {name!r}, and this tfds version verifies them. "
        "Genuine upstream downloads pass; repacked copies (e.g. Debian's "
        "dataset-fashion-mnist) do not. Either use the original files, or prepare once with "
        "the full lane (tfds 4.9.4 does not verify; `bash launch/setup.sh`) and point "
        "--config.dataset.data_dir at that data_dir: prepared data reads fine here.") from e
  except (ValueError, EOFError, OSError, zlib.error, tarfile.TarError, tf.errors.OpError) as e:
    # tfds parses the archives while it prepares; damaged ones fail deep inside it
    # (an empty image file: "cannot reshape array of size 0 ...").
    raise UserError(
        f"The files in {archive_dir} have the names {name!r} needs but could not be read "
        f"as its archives ({type(e).__name__}: {first_line(e)}). They are "
        "damaged or not the original downloads: fetch them again "
        f"({_archives_wanted(builder)}) and rerun. Nothing was written to the data_dir that "
        "a training run would read (tfds prepares into a temporary directory).") from e
  return builder


def _listing(directory, limit=8):
  names = sorted(os.listdir(directory))
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return (", ".join(names[:limit]) + more) or "nothing"


def is_damaged_dataset_error(error):
  """Whether a TF error from reading the data means its prepared files are damaged.

  A corrupted record raises DataLossError; a truncated shard ends early, which tfds'
  cardinality check reports as FailedPreconditionError "expected to contain N elements".
  """
  return (isinstance(error, tf.errors.DataLossError) or
          "Input dataset was expected to contain" in str(error))


def damaged_dataset_error(dataset_config, error):
  """The UserError for a prepared dataset whose files fail to read (tf DataLossError)."""
  builder = get_builder(dataset_config.name, dataset_config.data_dir)
  detail = first_line(error)
  return UserError(
      f"The prepared {builder.name!r} dataset in {builder.data_dir} is damaged: {detail}. "
      "(A truncated copy, or a disk that filled up while it was prepared.) Delete that "
      f"directory and prepare it again: python -m launch.prepare_data --dataset={builder.name}"
      " --archive_dir=DIR (README \"Data\"). Checkpoints written so far are kept.")
