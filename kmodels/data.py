"""The input pipelines of a run, from tensorflow-datasets (kmodels.preparation) or synthetic.

Training pipeline order, each step for a reason:
  cache (uint8, 4x smaller than float) -> shuffle (a new order every epoch) -> repeat
  -> batch(drop_remainder: static shapes for XLA/TPU and equal per-replica batches)
  -> scale + augment whole batches (one XLA-fused warp per batch, not per image)
  -> prefetch (overlap input with the train step).
"""

import collections
import functools

import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kmodels import augmentation, preparation
from kmodels.errors import UserError


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


def explain_read_error(error, dataset_config, info):
  """The UserError for a TF error caused by the data on disk, or None for other errors."""
  if preparation.is_damaged_dataset_error(error):
    return preparation.damaged_dataset_error(dataset_config, error)
  if _is_label_range_error(error):
    return _label_range_error(dataset_config, info, error)
  return None


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
  data_dir = preparation.get_builder(dataset_config.name, dataset_config.data_dir).data_dir
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
      images = augmentation.augment_batch(images, aug, tf.stack([base_seed, step]), scale=1 / _PIXEL_MAX)
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
    builder = preparation.get_builder(dataset_config.name, dataset_config.data_dir)
    info = _info_from_builder(builder, dataset_config.synthetic_train_examples,
                              dataset_config.synthetic_eval_examples)
    return (_synthetic_split(info, info.train_examples, seed),
            _synthetic_split(info, info.eval_examples, seed + 1), info)
  builder = preparation.ensure_prepared(dataset_config)
  read_config = tfds.ReadConfig(shuffle_seed=seed)
  train = _images_and_labels(builder, dataset_config.train_split, shuffle_files=True,
                             read_config=read_config)
  evaluation = _images_and_labels(builder, dataset_config.eval_split)
  info = _info_from_builder(
      builder, _num_examples(train, builder, dataset_config.train_split),
      _num_examples(evaluation, builder, dataset_config.eval_split))
  return train, evaluation, info


def load(dataset_config: ml_collections.ConfigDict, batch_size: int, seed: int) -> Datasets:
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
