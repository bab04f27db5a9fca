"""The input pipelines of a run, from the examples kmodels.data.sources reads.

Training pipeline order, each step for a reason:
  shard (kmodels.data.sources: by file when there are enough files, else by example)
  -> cache (dataset.cache: decoded uint8, 4x smaller than float; auto: only if it fits)
  -> shuffle (a new order every epoch) -> repeat
  -> [any size: skip on resume, then decode + random-resized crop + flip per example,
      so skipped examples are never decoded]
  -> batch(drop_remainder: static shapes for XLA/TPU and equal per-replica batches)
  -> scale + augment whole batches (one XLA-fused warp per batch, not per image)
  -> [dataset.service: all of the above on tf.data service workers]
  -> prefetch (overlap input with the train step).
"""

import collections
import functools
import typing

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from kmodels import cpus
from kmodels.data import (augmentation, data_service, images, mixing, preparation, randaugment,
                          sources)
from kmodels.data.sources import ENCODED, FILE, PIXELS  # noqa: F401  (what an element holds)
from kmodels.errors import UserError, first_line

DatasetInfo = sources.DatasetInfo


class Datasets(
    collections.namedtuple(
        "Datasets", ["make_train", "eval", "info", "make_decoded_train", "first_eval_images"])):
  """The pipelines of one run.

  make_train(input_context, start_step=0) builds the training pipeline of one input
  pipeline (one per worker): its own shard of the examples, batched per replica, from
  training step `start_step` on (a resumed run sees the batches an uninterrupted run would
  have seen). `eval` is one pass over the evaluation split in global batches.
  make_decoded_train() decodes the same training images and does nothing else (see
  _decoded_training_images). first_eval_images(count) gives the first `count` evaluation
  images as uint8 (the exports' warm-up requests).
  """

  @property
  def train(self):
    """The whole training pipeline in global batches, for one process and no strategy."""
    return self.make_train(None)

  def distributed_train(self, strategy, start_step=0):
    """The training pipeline as `strategy` wants it: one shard per worker."""
    return strategy.distribute_datasets_from_function(
        lambda input_context: self.make_train(input_context, start_step))


def explain_read_error(error, dataset_config, info):
  """The UserError for a TF error caused by the data on disk, or None for other errors."""
  if preparation.is_damaged_dataset_error(error):
    if dataset_config.name == sources.IMAGE_FOLDER:
      return UserError(f"The image records in {dataset_config.image_dir} are damaged "
                       f"({first_line(error)}). Write them again with "
                       "launch.prepare_data --dataset=image_folder. Checkpoints are kept.")
    return preparation.damaged_dataset_error(dataset_config, error)
  if _is_label_range_error(error):
    return _label_range_error(dataset_config, info, error)
  return None


# --------------------------------------------------------------------------- pipelines

_PIXEL_MAX = 255.0  # uint8 pixels / _PIXEL_MAX -> floats in [0, 1]


def scale_pixels(pixels):
  """What evaluation does to pixels (0-255, any dtype): float32 in [0, 1]. Serving too."""
  return tf.cast(pixels, tf.float32) / _PIXEL_MAX


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
  data_dir = sources.location(dataset_config)
  values = str(error).split(_LABEL_CHECK, 1)[1].split("\n")[0].strip(" ]").lstrip("[ ")
  return UserError(
      f"Dataset {info.name!r} has labels outside [0, {info.num_classes}) (found: {values}), "
      f"but its metadata declares {info.num_classes} classes, so the model has "
      f"{info.num_classes} outputs. Its records and its features.json disagree: if you built "
      "it yourself, declare a ClassLabel with as many classes as the labels need and prepare "
      f"it again; otherwise delete {data_dir} and prepare it "
      "again (README \"Data\").")


def _load_image(kind):
  """What turns an element's image into something images.decode/crop take."""
  return tf.io.read_file if kind == FILE else tf.identity


def _decoded(kind, channels):
  """Element image -> uint8 [H, W, channels] at its own size (what a cache holds)."""
  if kind == PIXELS:
    return lambda image: images.to_channels(image, channels)
  load = _load_image(kind)
  return lambda image: images.decode(load(image), channels)


def _per_example(source):
  """Whether images are converted one by one (any size), or batched as they are."""
  return source.kind != PIXELS or source.native_shape != source.info.image_shape


def _train_transform(dataset_config, info):
  """(image, seed) -> training pixels uint8 info.image_shape, of one image."""
  size, channels = info.image_shape[0], info.image_shape[-1]
  if not dataset_config.image_size:  # a fixed-size dataset at its own size: channels only
    return lambda image, seed: images.to_channels(image, channels)
  policy = images.crop_policy(dataset_config)
  return lambda image, seed: images.train_image(image, size, dataset_config.crop, channels, seed,
                                                policy)


def eval_transform(dataset_config, info):
  """image -> evaluation pixels uint8 info.image_shape; the serving export uses it too."""
  size, channels = info.image_shape[0], info.image_shape[-1]
  if not dataset_config.image_size:
    return lambda image: images.to_channels(image, channels)
  return lambda image: images.eval_image(image, size, info.eval_crop_fraction, channels)


def _cache_train(ds, source, dataset_config, num_pipelines):
  """ds cached in memory when dataset.cache says so (auto: if it fits, see cache_decision)."""
  share = (source.train_decoded_bytes //
           num_pipelines if source.train_decoded_bytes is not None else None)
  if not cache_decision(dataset_config, share, "train"):
    return ds, source.kind
  if source.kind == PIXELS:
    return ds.cache(), PIXELS
  decode = _decoded(source.kind, source.info.image_shape[-1])
  # Decoded at full size, before the random crop: every epoch crops anew.
  return _skip_undecodable(
      ds.map(lambda image, label: (decode(image), label), num_parallel_calls=_parallel_calls()),
      source.kind).cache(), PIXELS


def _train_pipeline(source, dataset_config, global_batch_size, seed, input_context, start_step=0):
  pipeline_id, num_pipelines = 0, 1
  batch_size = global_batch_size
  batches_per_step = 1
  if input_context is not None:
    batch_size = input_context.get_per_replica_batch_size(global_batch_size)
    pipeline_id, num_pipelines = input_context.input_pipeline_id, input_context.num_input_pipelines
    batches_per_step = input_context.num_replicas_in_sync // num_pipelines
  info = source.info
  ds = source.train(input_context)
  if dataset_config.service:
    ds, start_step = _service_shard(ds, start_step)
  ds, kind = _cache_train(ds, source, dataset_config, num_pipelines)
  ds = ds.shuffle(dataset_config.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
  ds = ds.repeat()
  # Stateless seeds: (run seed, input pipeline) x position -> the same crops and transforms
  # on a rerun, different ones on each worker.
  base_seed = tf.constant(seed, tf.int64) * 1_000_003 + pipeline_id
  if _per_example(source._replace(kind=kind)):
    ds = _cropped_batches(ds, kind, _train_transform(dataset_config, info), batch_size, base_seed,
                          start_step * batches_per_step)
  else:
    # Skipping uint8 batches before the augmentation costs a pass through the shuffle only.
    ds = ds.batch(batch_size, drop_remainder=True).enumerate()
    ds = ds.skip(start_step * batches_per_step)
    ds = ds.map(lambda step, batch: (step, *batch))
  augment = functools.partial(augmented_batch, dataset_config.augment, info.num_classes, base_seed)
  ds = ds.map(augment, num_parallel_calls=_BATCH_PARALLEL_CALLS)
  ds = _maybe_through_service(ds, dataset_config)
  # The pipeline shards itself above; tf.distribute must not shard it a second time.
  return _with_options(ds, tf.data.experimental.AutoShardPolicy.OFF).prefetch(_PREFETCH)


def augmented_batch(aug, num_classes, base_seed, step, images_batch, labels):
  """A training batch (uint8) scaled to [0, 1] and augmented as `dataset.augment` says,
  with its labels checked, or mixed into class shares (MixUp, CutMix).

  Every draw is seeded by (base_seed, step): the batch at a step is the same in a resumed
  run as in the unbroken one.
  """
  seed = tf.stack([base_seed, step])
  labels = _checked(labels, num_classes)
  if aug.randaugment_ops:
    images_batch = randaugment.augment_batch(images_batch, aug.randaugment_ops,
                                             aug.randaugment_magnitude,
                                             tf.random.experimental.stateless_fold_in(seed, 1))
  if aug.enabled:  # scaled inside the warp: one pass over the pixels
    images_batch = augmentation.augment_batch(images_batch, aug, seed, scale=1 / _PIXEL_MAX)
  else:
    images_batch = scale_pixels(images_batch)
  if mixing.mixes(aug):
    return mixing.mix_batch(images_batch, labels, num_classes, aug,
                            tf.random.experimental.stateless_fold_in(seed, 2))
  return images_batch, labels


def _cropped_batches(ds, kind, transform, batch_size, base_seed, start_batch):
  """(step, uint8 image batch, labels), each image converted by `transform` on its own.

  The position of each example in the stream seeds its crop, and the skip on resume comes
  before anything is read or decoded: skipped examples cost a pass through the shuffle.
  """
  load = _load_image(kind)

  def train_example(position, example):
    image, label = example
    return position, transform(load(image), tf.stack([base_seed, position])), label

  ds = ds.enumerate().skip(start_batch * batch_size)
  ds = _skip_undecodable(ds.map(train_example, num_parallel_calls=_parallel_calls()), kind)
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.map(lambda positions, image_batch, labels:
                (positions[0] // batch_size, image_batch, labels))


def _service_shard(ds, start_step):
  """Each tf.data service worker's share of the examples, before anything is decoded.

  The placeholder shard becomes shard(workers, worker index) on each worker
  (ShardingPolicy.HINT). Workers' batches arrive in no fixed order, so there is no exact
  position to skip to on a resume: the stream starts afresh (kmodels/data/data_service.py).
  """
  if start_step:
    logging.info(
        "Resuming at step %d through the tf.data service: the input stream starts "
        "afresh (batches are not replayed exactly through the service).", start_step)
  hint = tf.data.experimental.SHARD_HINT
  return ds.shard(hint, hint), 0


def _skip_undecodable(ds, kind):
  """For image files: `ds` without the examples whose reading or decoding fails, each
  failure logged by tf.data.

  Folders are checked by header and end before a run (image_folder.check_files), which
  catches empty, cut, bomb and wrong-format files; a file damaged in the middle (a PNG
  whose chunk CRC fails; JPEGs mostly decode anyway) only fails when decoded, perhaps
  hours in. Skipping it keeps the run alive, as the check would have. Only for files:
  upstream of the map there is nothing but a list of paths, whereas for records and tfds
  datasets ignore_errors would also swallow a damaged shard's read errors, which must
  stop the run with the damaged-dataset message instead.
  """
  return ds.ignore_errors(log_warning=True) if kind == FILE else ds


def _maybe_through_service(ds, dataset_config):
  """Preprocessing on tf.data service workers (dataset.service), else here."""
  if not dataset_config.service:
    return ds
  logging.info("Input pipeline runs on the tf.data service workers of %s.", dataset_config.service)
  return data_service.distribute(ds, dataset_config.service)


def _parallel_calls():
  """Per-example map parallelism: the CPUs this process may use (kmodels/cpus.py)."""
  return cpus.usable_cpus()


# Fixed parallelism instead of tf.data's autotuner. With autotuning on (TF 2.15), deleting
# an iterator waits for the autotuner's thread to wake from its sleep: 20-31 s at the end
# of a `fit` here (gdb: ~RootDataset::Iterator waiting on Model::OptimizeLoop), and again
# for every evaluation pass. Per-example work (decode, crop, resize) runs on every CPU the
# process may use; whole-batch maps are few and each is multi-threaded inside (BUILD_NOTES).
_BATCH_PARALLEL_CALLS = 2
_PREFETCH = 2


def _with_options(ds, shard_policy):
  """How tf.distribute may split `ds` over workers; no autotuner (see _PREFETCH)."""
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = shard_policy
  options.autotune.enabled = False
  return ds.with_options(options)


def _first_eval_images(source, dataset_config, count):
  """uint8 [count, H, W, C]: the first evaluation images, as evaluation prepares them.

  From a pipeline of their own, uncached: reading the start of `Datasets.eval` before its
  first full pass truncated its in-memory cache to what was read (TF 2.15: the run's
  labels then came out 10 instead of 48).
  """
  pixels, _ = next(iter(_eval_pipeline(source, dataset_config, count, cache=False)))
  return np.round(pixels.numpy() * _PIXEL_MAX).astype(np.uint8)


def _eval_pipeline(source, dataset_config, batch_size, cache=True):
  # No drop_remainder: evaluation covers every test example exactly once. Under several
  # workers tf.distribute shards the batches (DATA policy: one file is enough).
  info = source.info
  ds = source.eval
  if _per_example(source):
    load, transform = _load_image(source.kind), eval_transform(dataset_config, info)
    # Deterministic, so what is cached is the final N x N uint8 image.
    ds = _skip_undecodable(
        ds.map(lambda image, label: (transform(load(image)), label),
               num_parallel_calls=_parallel_calls()), source.kind)
  eval_bytes = (info.eval_examples or 0) * int(np.prod(info.image_shape))
  if cache and cache_decision(dataset_config, eval_bytes, "eval"):
    ds = ds.cache()
  ds = ds.batch(batch_size)
  ds = ds.map(lambda x, y: (scale_pixels(x), _checked(y, info.num_classes)),
              num_parallel_calls=_BATCH_PARALLEL_CALLS)
  return _with_options(ds, tf.data.experimental.AutoShardPolicy.DATA).prefetch(_PREFETCH)


CACHE_POLICIES = ("auto", "memory", "none")


def cache_decision(dataset_config, decoded_bytes, what):
  """Whether to cache a split in memory: dataset.cache, and for `auto` whether it fits.

  auto caches when the decoded images, twice over (the cache and a shuffle buffer as
  large), fit in dataset.cache_ram_fraction of the memory this process may use.
  """
  policy = dataset_config.cache
  if policy != "auto":
    return policy == "memory"
  if decoded_bytes is None:
    return False
  budget = dataset_config.cache_ram_fraction * cpus.usable_memory_bytes()
  fits = 2 * decoded_bytes <= budget
  if decoded_bytes > 64 << 20:  # worth a line only when it matters
    logging.info(
        "dataset.cache=auto: the %s split decodes to %.1f GB; %s in memory "
        "(budget %.1f GB = dataset.cache_ram_fraction %.2f of usable RAM).", what,
        decoded_bytes / 1e9, "cached" if fits else "read anew every epoch, not cached",
        budget / 1e9, dataset_config.cache_ram_fraction)
  return fits


def _decoded_training_images(source):
  """Every training image decoded at its own size, and nothing else, repeated.

  What no input pipeline over these files can outrun on the same CPUs: `launch.benchmark
  --input_only` measures the pipeline against it. Files are read and decoded with the
  pipeline's parallelism; no crop, resize, batch or cache.
  """
  if source.kind == PIXELS:
    raise UserError(f"{source.info.name} holds decoded pixels; --input_only measures "
                    "decoding, so it needs encoded images: an image folder "
                    "(dataset.name=image_folder) or a tfds dataset of varying image size.")
  decode = _decoded(source.kind, source.info.image_shape[-1])
  return source.train(None).repeat().map(lambda image, label: decode(image),
                                         num_parallel_calls=_parallel_calls()).prefetch(_PREFETCH)


def load_split(config: ml_collections.ConfigDict, split: str, key: str) -> Datasets:
  """The run's pipelines evaluating `split` (of the run's own dataset), checked first.

  `key` names where the split came from (a flag), for the error when it names nothing.
  """
  sources.check_split(config.dataset, split, key)
  config.dataset.eval_split = split
  datasets = load(config.dataset, config.train.batch_size, config.train.seed)
  if datasets.info.eval_examples == 0:
    raise UserError(f"{key}={split!r} selects no examples of {datasets.info.name!r}.")
  return datasets


def load(dataset_config: ml_collections.ConfigDict,
         batch_size: int,
         seed: int,
         source: typing.Optional[sources.Source] = None) -> Datasets:
  """Builds the training and evaluation pipelines described by `config.dataset`.

  Args:
    dataset_config: the `config.dataset` ConfigDict.
    batch_size: global batch size of both pipelines.
    seed: seeds file shuffling, the shuffle buffer, crops, augmentation and synthetic data.
    source: `sources.open_source(dataset_config, seed)` when the caller opened it already
      (training.prepare does, to record the resolved splits); default: opened here.

  Returns:
    Datasets (see its docstring): make_train(input_context, start_step) builds a training
    pipeline that repeats forever with static batch shapes; `eval` is one pass over the
    evaluation split; images are float32 in [0, 1], of info.image_shape; training labels
    are class shares when dataset.augment mixes them (MixUp, CutMix), else integers.
  """
  source = source or sources.open_source(dataset_config, seed)
  info = source.info
  if info.train_examples is not None and info.train_examples < batch_size:
    raise UserError(f"train.batch_size {batch_size} is larger than the {info.train_examples} "
                    f"examples of {info.name!r} split {dataset_config.train_split!r}.")
  make_train = functools.partial(_train_pipeline, source, dataset_config, batch_size, seed)
  return Datasets(make_train, _eval_pipeline(source, dataset_config, batch_size), info,
                  functools.partial(_decoded_training_images, source),
                  functools.partial(_first_eval_images, source, dataset_config))
