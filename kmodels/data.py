"""Datasets through tensorflow-datasets: loading, offline preparation, the input pipeline.

Training pipeline order, each step for a reason:
  cache (uint8, 4x smaller than float) -> shuffle (a new order every epoch) -> repeat
  -> batch(drop_remainder: static shapes for XLA/TPU and equal per-replica batches)
  -> scale + augment whole batches (one XLA-fused warp per batch, not per image)
  -> prefetch (overlap input with the train step).
"""

import collections
import functools
import math
import os
import tarfile
import urllib.parse
import zlib

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download.download_manager import NonMatchingChecksumError

from kmodels import netcheck, storage
from kmodels.errors import UserError

TESTED_DATASETS = ("fashion_mnist", "mnist", "cifar10")
DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
# How long to wait for a download host before declaring the machine offline. Without
# this check tfds retries for minutes (204 s measured here) before giving up.
_REACHABILITY_TIMEOUT_SECONDS = 5

DatasetInfo = collections.namedtuple(
    "DatasetInfo", ["name", "image_shape", "num_classes", "label_names",
                    "train_examples", "eval_examples"])


class Datasets(collections.namedtuple("Datasets", ["make_train", "eval", "info"])):
  """The pipelines of one run.

  make_train(input_context, start_step=0) builds the training pipeline of one input
  pipeline (one per worker): its own shard of the examples, batched per replica, from
  training step `start_step` on (a resumed run sees the batches an uninterrupted run would
  have seen). `eval` is one pass over the evaluation split in global batches.
  """

  @property
  def train(self):
    """The whole training pipeline in global batches, for one process and no strategy."""
    return self.make_train(None)

  def distributed_train(self, strategy, start_step=0):
    """The training pipeline as `strategy` wants it: one shard per worker."""
    return strategy.distribute_datasets_from_function(
        lambda input_context: self.make_train(input_context, start_step))


# ----------------------------------------------------------------------------- builders


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
  """Raises UserError unless `features` describe fixed-size images with class labels."""
  if "image" not in features or "label" not in features:
    raise UserError(f"Dataset {name!r} has features {sorted(features)}; kmodels needs an "
                    "'image' and a 'label' feature (an image classification dataset).")
  shape = tuple(features["image"].shape)
  if len(shape) != 3 or None in shape:
    raise UserError(f"Dataset {name!r} has images of shape {shape}; kmodels trains on "
                    "images of one fixed size (height, width, channels), as in mnist, "
                    "fashion_mnist and cifar10. Resize them when you build the dataset.")
  if getattr(features["label"], "num_classes", None) is None:
    raise UserError(f"Dataset {name!r} has a {type(features['label']).__name__} label; "
                    "kmodels needs a ClassLabel (a class index and a number of classes).")


# tfds 4.9.4 (full lane) looks for ready-made copies of every dataset on Google's public
# bucket gs://tfds-data; newer tfds no longer does. Here that was a useless request to
# Google (and a GCE metadata-server lookup) on every load; kmodels reads only data_dir.
tfds.core.utils.gcs_utils._is_gcs_disabled = True  # pylint: disable=protected-access

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
  return sorted(info.filename for info in builder.url_infos.values() if info.filename)


def _download_hosts(builder):
  return sorted({urllib.parse.urlparse(url).hostname for url in builder.url_infos})


def _offline_help(builder):
  name = builder.name
  lines = [
      f"Dataset {name!r} is not prepared in {storage.dirname(storage.dirname(str(builder.data_dir)))}"
      " and cannot be downloaded from here.",
      "Prepare it offline from its original download files "
      f"({', '.join(expected_archive_files(builder))}):",
      f"  python -m launch.prepare_data --dataset={name} --archive_dir=DIR_WITH_THOSE_FILES",
  ]
  if name == "fashion_mnist":
    lines.append("On Debian/Ubuntu the files come from a package: apt-get install -y "
                 f"dataset-fashion-mnist (then --archive_dir={DEBIAN_FASHION_MNIST}).")
  lines.append("Or use --config.dataset.source=synthetic for a smoke run on random data.")
  return "\n".join(lines)


def ensure_prepared(dataset_config):
  """Returns a builder whose data is on disk, downloading it when allowed and possible."""
  if dataset_config.data_dir:
    storage.check_reachable(dataset_config.data_dir, "dataset.data_dir")
  builder = get_builder(dataset_config.name, dataset_config.data_dir)
  if is_prepared(builder) or _download_is_mocked():
    return builder
  if not dataset_config.download:
    raise UserError(_offline_help(builder) + "\n(dataset.download is False.)")
  unreachable = [h for h in _download_hosts(builder)
                 if not netcheck.reachable(h, 443, _REACHABILITY_TIMEOUT_SECONDS)]
  if unreachable:
    raise UserError(_offline_help(builder) + f"\n(No connection to {', '.join(unreachable)}.)")
  try:
    builder.download_and_prepare()
  except OSError as e:
    raise UserError(f"Downloading {builder.name!r} failed: {e}\n" + _offline_help(builder)) from e
  return builder


def prepare_offline(name, archive_dir, data_dir=None):
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
                    f"original download files of {name!r}: {', '.join(expected)}.")
  missing = [f for f in expected if not os.path.isfile(os.path.join(archive_dir, f))]
  if missing:
    raise UserError(
        f"{archive_dir} lacks {', '.join(missing)}. To prepare {name!r} offline it must "
        f"hold: {', '.join(expected)} (found: {_listing(archive_dir)}).")
  try:
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=archive_dir))
  except NonMatchingChecksumError as e:
    raise UserError(
        f"The files in {archive_dir} are not byte-identical to the archives tfds "
        f"{tfds.__version__} registered for {name!r}, and this tfds version verifies them. "
        "Genuine upstream downloads pass; repacked copies (e.g. Debian's "
        "dataset-fashion-mnist) do not. Either use the original files, or prepare once with "
        "the full lane (tfds 4.9.4 does not verify; `bash launch/setup.sh`) and point "
        "--config.dataset.data_dir at that data_dir: prepared data reads fine here.") from e
  except (ValueError, EOFError, OSError, zlib.error, tarfile.TarError,
          tf.errors.OpError) as e:
    # tfds parses the archives while it prepares; damaged ones fail deep inside it
    # (an empty image file: "cannot reshape array of size 0 ...").
    raise UserError(
        f"The files in {archive_dir} have the names {name!r} needs but could not be read "
        f"as its archives ({type(e).__name__}: {str(e).splitlines()[0][:200]}). They are "
        "damaged or not the original downloads: fetch them again "
        f"({', '.join(expected)}) and rerun. Nothing was written to the data_dir that "
        "a training run would read (tfds prepares into a temporary directory).") from e
  return builder


def _listing(directory, limit=8):
  names = sorted(os.listdir(directory))
  more = f" and {len(names) - limit} more" if len(names) > limit else ""
  return (", ".join(names[:limit]) + more) or "nothing"


def explain_read_error(error, dataset_config, info):
  """The UserError for a TF error caused by the data on disk, or None for other errors."""
  if _is_damaged_dataset_error(error):
    return _damaged_dataset_error(dataset_config, error)
  if _is_label_range_error(error):
    return _label_range_error(dataset_config, info, error)
  return None


def _is_damaged_dataset_error(error):
  """Whether a TF error from reading the data means its prepared files are damaged.

  A corrupted record raises DataLossError; a truncated shard ends early, which tfds'
  cardinality check reports as FailedPreconditionError "expected to contain N elements".
  """
  return (isinstance(error, tf.errors.DataLossError)
          or "Input dataset was expected to contain" in str(error))


def _damaged_dataset_error(dataset_config, error):
  """The UserError for a prepared dataset whose files fail to read (tf DataLossError)."""
  builder = get_builder(dataset_config.name, dataset_config.data_dir)
  detail = str(error).strip().splitlines()[0][:200]
  return UserError(
      f"The prepared {builder.name!r} dataset in {builder.data_dir} is damaged: {detail}. "
      "(A truncated copy, or a disk that filled up while it was prepared.) Delete that "
      f"directory and prepare it again: python -m launch.prepare_data --dataset={builder.name}"
      " --archive_dir=DIR (README \"Data\"). Checkpoints written so far are kept.")


# ------------------------------------------------------------------------- augmentation


def random_affine_transforms(batch_size, height, width, aug, seed):
  """Per-image affine maps (output pixel -> input pixel), as ImageDataGenerator draws them.

  Rotation, shear and zoom act about the image centre, then a shift is added; a
  horizontal flip mirrors the output. Returned as [batch, 8] rows in the layout of TF's
  projective transforms (`warp_bilinear` reads the first six). `seed` is a stateless
  seed (shape [2]).
  """
  seeds = tf.random.experimental.stateless_split(seed, num=7)

  def uniform(i, bound):
    return tf.random.stateless_uniform([batch_size], seeds[i], -bound, bound)

  angle = uniform(0, aug.rotation_degrees * math.pi / 180)
  # ImageDataGenerator reads shear_range in degrees; seed A's 0.15 is kept as it ran.
  shear = uniform(1, aug.shear * math.pi / 180)
  zoom_x = 1.0 + uniform(2, aug.zoom)
  zoom_y = 1.0 + uniform(3, aug.zoom)
  shift_x = uniform(4, aug.shift) * width
  shift_y = uniform(5, aug.shift) * height
  flip = tf.ones([batch_size])
  if aug.horizontal_flip:
    flip = tf.where(tf.random.stateless_uniform([batch_size], seeds[6]) < 0.5, -1.0, 1.0)

  cos, sin = tf.cos(angle), tf.sin(angle)
  # A = rotation @ shear @ zoom @ flip, written out per matrix entry.
  a00 = cos * zoom_x * flip
  a01 = (-cos * tf.sin(shear) - sin * tf.cos(shear)) * zoom_y
  a10 = sin * zoom_x * flip
  a11 = (-sin * tf.sin(shear) + cos * tf.cos(shear)) * zoom_y
  cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
  # input = A (out - c) + c + shift
  b0 = cx - a00 * cx - a01 * cy + shift_x
  b1 = cy - a10 * cx - a11 * cy + shift_y
  zeros = tf.zeros([batch_size])
  return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def augment_batch(images, aug, seed, scale=1.0):
  """One random affine transform per image of a [B, H, W, C] batch (uint8 or float).

  Returns float32 pixels times `scale`: 1/255 turns a uint8 batch into [0, 1] within the
  same compiled loop.
  """
  batch, height, width = images.shape[0], images.shape[1], images.shape[2]
  transforms = random_affine_transforms(batch, height, width, aug, seed)
  return tf.ensure_shape(warp_bilinear(images, transforms, scale), images.shape)


def _warp_bilinear(images, transforms, scale=1.0):
  """`ImageProjectiveTransformV3(BILINEAR, fill_mode=NEAREST)` for affine `transforms`.

  Written as gathers so that XLA fuses it into one loop: no intermediate tensor is
  written, and uint8 pixels are gathered as they are and converted in registers. In
  tf.data it gave 1.7-2.1x the op's images/s on float pixels, and 1.5x more on uint8 ones
  with the scaling fused (BUILD_NOTES "Speed"); tests compare it with the op.
  Returns float32 samples times `scale`.
  """
  batch, height, width, channels = images.shape
  out_y, out_x = tf.meshgrid(tf.range(height, dtype=tf.float32),
                             tf.range(width, dtype=tf.float32), indexing="ij")
  out_x, out_y = tf.reshape(out_x, [1, -1]), tf.reshape(out_y, [1, -1])
  a = [transforms[:, i:i + 1] for i in range(6)]  # rows [a0 a1 a2; a3 a4 a5]
  # Fill mode "nearest": a source point outside the image reads its nearest edge pixel.
  src_x = tf.clip_by_value(a[0] * out_x + a[1] * out_y + a[2], 0.0, width - 1.0)
  src_y = tf.clip_by_value(a[3] * out_x + a[4] * out_y + a[5], 0.0, height - 1.0)
  x0, y0 = tf.floor(src_x), tf.floor(src_y)
  weight_x, weight_y = (src_x - x0)[..., None], (src_y - y0)[..., None]
  x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
  x1, y1 = tf.minimum(x0 + 1, width - 1), tf.minimum(y0 + 1, height - 1)
  pixels = tf.reshape(images, [batch, height * width, channels])

  def at(y, x):
    return tf.cast(tf.gather(pixels, y * width + x, batch_dims=1), tf.float32)

  top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * weight_x
  bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * weight_x
  blended = top + (bottom - top) * weight_y
  return tf.reshape(blended * scale, [batch, height, width, channels])


warp_bilinear = tf.function(_warp_bilinear, jit_compile=True)


# --------------------------------------------------------------------------- pipelines


_PIXEL_MAX = 255.0  # uint8 pixels / _PIXEL_MAX -> floats in [0, 1]


def scale_pixels(images):
  """What evaluation does to pixels (0-255, any dtype): float32 in [0, 1]. Serving too."""
  return tf.cast(images, tf.float32) / _PIXEL_MAX


_scale = scale_pixels


# Sparse cross-entropy fails on CPU for a label outside [0, num_classes), but returns NaN
# on GPU; checking in the input pipeline gives every device the same clear error.
_LABEL_CHECK = "kmodels: labels outside [0, num_classes)"


def _checked(labels, num_classes):
  """`labels`, or an InvalidArgumentError naming the out-of-range values when run."""
  bad = tf.boolean_mask(labels, (labels < 0) | (labels >= num_classes))
  # tf.equal, not ==: inside an Estimator's TF1 graph `tensor == 0` is Python identity.
  check = tf.debugging.Assert(tf.equal(tf.size(bad), 0), [_LABEL_CHECK, bad], summarize=5)
  with tf.control_dependencies([check]):
    return tf.identity(labels)


def _is_label_range_error(error):
  return isinstance(error, tf.errors.InvalidArgumentError) and _LABEL_CHECK in str(error)


def _label_range_error(dataset_config, info, error):
  """The UserError for labels the dataset's own metadata says can't exist."""
  data_dir = get_builder(dataset_config.name, dataset_config.data_dir).data_dir
  values = str(error).split(_LABEL_CHECK, 1)[1].split("\n")[0].strip(" ]").lstrip("[ ")
  return UserError(
      f"Dataset {info.name!r} has labels outside [0, {info.num_classes}) (found: {values}), "
      f"but its metadata declares {info.num_classes} classes, so the model has "
      f"{info.num_classes} outputs. Its records and its features.json disagree: if you built "
      "it yourself, declare a ClassLabel with as many classes as the labels need and prepare "
      f"it again; otherwise delete {data_dir} and prepare it "
      "again (README \"Data\").")


def _train_pipeline(ds, dataset_config, global_batch_size, seed, num_classes, input_context,
                    start_step=0):
  pipeline_id = 0
  batch_size = global_batch_size
  batches_per_step = 1
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(global_batch_size)
    pipeline_id = input_context.input_pipeline_id
    batches_per_step = input_context.num_replicas_in_sync // input_context.num_input_pipelines
    # Every worker lists the files in the same seeded order, so taking every n-th example
    # gives disjoint shards: no example is read twice in an epoch. (Sharding by file
    # would need at least one file per worker; fashion_mnist has one train file.)
    ds = ds.shard(input_context.num_input_pipelines, pipeline_id)
  ds = ds.cache().shuffle(dataset_config.shuffle_buffer, seed=seed,
                          reshuffle_each_iteration=True)
  ds = ds.repeat().batch(batch_size, drop_remainder=True)
  aug = dataset_config.augment

  def scale_and_augment(step, batch):
    images, labels = batch
    if aug.enabled:
      # Stateless seed: (run seed, input pipeline) x step -> the same images on a rerun,
      # different transforms on each worker. Scaled in the warp: one pass over uint8.
      base_seed = tf.cast(seed, tf.int64) * 1_000_003 + pipeline_id
      images = augment_batch(images, aug, tf.stack([base_seed, step]), scale=1 / _PIXEL_MAX)
    else:
      images = _scale(images)
    return images, _checked(labels, num_classes)

  # Skipping uint8 batches before the augmentation costs a pass through the shuffle only.
  ds = ds.enumerate().skip(start_step * batches_per_step)
  ds = ds.map(scale_and_augment, num_parallel_calls=_PARALLEL_CALLS)
  # The pipeline shards itself above; tf.distribute must not shard it a second time.
  return _with_options(ds, tf.data.experimental.AutoShardPolicy.OFF).prefetch(_PREFETCH)


# Fixed parallelism instead of tf.data's autotuner. With autotuning on (TF 2.15), deleting
# an iterator waits for the autotuner's thread to wake from its sleep: 20-31 s at the end
# of a `fit` here (gdb: ~RootDataset::Iterator waiting on Model::OptimizeLoop), and again
# for every evaluation pass. Fixed values kept the pipeline's throughput (BUILD_NOTES).
_PARALLEL_CALLS = 2
_PREFETCH = 2


def _with_options(ds, shard_policy):
  """How tf.distribute may split `ds` over workers; no autotuner (see _PARALLEL_CALLS)."""
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = shard_policy
  options.autotune.enabled = False
  return ds.with_options(options)


def _eval_pipeline(ds, batch_size, num_classes):
  # No drop_remainder: evaluation covers every test example exactly once. Under several
  # workers tf.distribute shards the batches (DATA policy: one file is enough).
  ds = ds.cache().batch(batch_size)
  ds = ds.map(lambda x, y: (_scale(x), _checked(y, num_classes)),
              num_parallel_calls=_PARALLEL_CALLS)
  return _with_options(ds, tf.data.experimental.AutoShardPolicy.DATA).prefetch(_PREFETCH)


def _info_from_builder(builder, train_examples, eval_examples):
  features = builder.info.features
  return DatasetInfo(
      name=builder.name, image_shape=tuple(features["image"].shape),
      num_classes=features["label"].num_classes, label_names=list(features["label"].names),
      train_examples=train_examples, eval_examples=eval_examples)


def _synthetic_split(info, num_examples, seed):
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(num_examples, *info.image_shape), dtype=np.uint8)
  labels = rng.integers(0, info.num_classes, size=(num_examples,), dtype=np.int64)
  return tf.data.Dataset.from_tensor_slices((images, labels))


def _num_examples(ds, builder, split):
  # The dataset's own count (right under tfds.testing.mock_data too); inside a TF1 graph
  # (an Estimator's input_fn) it may be symbolic, then the builder's split info counts.
  # Under mock_data in a graph neither is known: None (the Estimator does not need it).
  count = tf.get_static_value(ds.cardinality())
  if count is not None:
    return int(count)
  splits = builder.info.splits
  return splits[split].num_examples if split in splits else None


def _images_and_labels(builder, split, **as_dataset_kwargs):
  # Not as_supervised: datasets built from files (a features.json, no builder class)
  # often declare no supervised keys; every kmodels dataset has 'image' and 'label'.
  return builder.as_dataset(split=split, **as_dataset_kwargs).map(
      lambda example: (example["image"], example["label"]))


def _raw_splits(dataset_config, seed):
  """(train, eval, info) as unbatched uint8 (image, label) datasets."""
  if dataset_config.source == "synthetic":
    builder = get_builder(dataset_config.name, dataset_config.data_dir)
    info = _info_from_builder(builder, dataset_config.synthetic_train_examples,
                              dataset_config.synthetic_eval_examples)
    return (_synthetic_split(info, info.train_examples, seed),
            _synthetic_split(info, info.eval_examples, seed + 1), info)
  builder = ensure_prepared(dataset_config)
  read_config = tfds.ReadConfig(shuffle_seed=seed)
  train = _images_and_labels(builder, dataset_config.train_split, shuffle_files=True,
                             read_config=read_config)
  evaluation = _images_and_labels(builder, dataset_config.eval_split)
  info = _info_from_builder(
      builder, _num_examples(train, builder, dataset_config.train_split),
      _num_examples(evaluation, builder, dataset_config.eval_split))
  return train, evaluation, info


def load(dataset_config, batch_size, seed):
  """Builds the training and evaluation pipelines described by `config.dataset`.

  Args:
    dataset_config: the `config.dataset` ConfigDict.
    batch_size: global batch size of both pipelines.
    seed: seeds file shuffling, the shuffle buffer, augmentation and synthetic data.

  Returns:
    Datasets(make_train, eval, info): the training pipeline repeats forever with static
    batch shapes; `eval` is one pass over the evaluation split; images are float32 in
    [0, 1].
  """
  train, evaluation, info = _raw_splits(dataset_config, seed)
  if info.train_examples is not None and info.train_examples < batch_size:
    raise UserError(f"train.batch_size {batch_size} is larger than the {info.train_examples} "
                    f"examples of {info.name!r} split {dataset_config.train_split!r}.")
  make_train = functools.partial(_train_pipeline, train, dataset_config, batch_size, seed,
                                 info.num_classes)
  return Datasets(make_train, _eval_pipeline(evaluation, batch_size, info.num_classes), info)
