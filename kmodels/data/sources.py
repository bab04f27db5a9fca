"""Where a run's examples come from: tfds builders, image folders, or synthetic data.

A Source yields (image, label) examples before any batching; kmodels.data builds the
pipelines on top. What an example's `image` holds (`kind`):
  PIXELS   uint8 [H, W, C], decoded by tfds (fixed-size datasets: mnist, cifar10, ...)
  ENCODED  the file's bytes (variable-size tfds datasets, image-folder records)
  FILE     a path (image folders read file by file)

Sharding across workers happens here, where the files are known: by file when a split has
at least as many files as there are input pipelines (each worker reads only its own
bytes), by example otherwise (every worker reads everything and keeps 1/n).
"""

import collections
import types
import typing

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kmodels import storage
from kmodels.data import image_folder, images, preparation
from kmodels.errors import UserError

PIXELS, ENCODED, FILE = "pixels", "encoded", "file"
IMAGE_FOLDER = "image_folder"  # dataset.name of one's own images
DEFAULT_EVAL_SPLIT = "test"  # configs/base.py's; a dataset without it gets a held-out slice
_SIZE_SAMPLE = 32  # encoded images decoded to estimate a split's decoded size

DatasetInfo = collections.namedtuple(
    "DatasetInfo",
    [
        "name",
        "image_shape",
        "num_classes",
        "label_names",
        "train_examples",
        "eval_examples",
        # None: the whole image is resized (or, without dataset.image_size,
        # batched at its own fixed size); else evaluation (and serving)
        # centre-crops this fraction, then resizes.
        "eval_crop_fraction",
        "bad_files"
    ],  # {"train": n, "eval": n} unreadable files skipped
    defaults=(None, None))


class Source(typing.NamedTuple):
  """`train(input_context)`: this input pipeline's own examples, in a seeded file order
  that changes every epoch; `eval`: the evaluation split's examples."""
  info: DatasetInfo
  train: typing.Callable[[typing.Optional[tf.distribute.InputContext]], tf.data.Dataset]
  eval: tf.data.Dataset
  kind: str
  native_shape: typing.Optional[tuple]  # PIXELS: the decoded shape; None: any size
  train_decoded_bytes: typing.Optional[int]  # all train images decoded; None: unknown
  # config.dataset as read: a tfds dataset without a `test` split has its evaluation split
  # resolved here (with_resolved_splits), once per run; the run records these splits.
  dataset_config: ml_collections.ConfigDict


def open_source(dataset_config, seed) -> Source:
  """The Source `dataset_config` describes (config.dataset)."""
  if dataset_config.source == "synthetic":
    return _synthetic_source(dataset_config, seed)
  if dataset_config.name == IMAGE_FOLDER:
    return _folder_source(dataset_config, seed)
  return _tfds_source(dataset_config, seed)


def location(dataset_config):
  """Where the dataset's files are, for messages."""
  if dataset_config.name == IMAGE_FOLDER:
    return dataset_config.image_dir
  return preparation.get_builder(dataset_config.name, dataset_config.data_dir).data_dir


def _image_shape(dataset_config, native):
  """The model's input shape: N x N when dataset.image_size is set, else the native size."""
  height, width, channels = native
  channels = dataset_config.channels or channels or 3
  if dataset_config.image_size:
    return (dataset_config.image_size, dataset_config.image_size, channels)
  return (height, width, channels)


def _eval_crop(dataset_config):
  if not dataset_config.image_size:
    return None
  policy = images.crop_policy(dataset_config)
  if policy in images.EVAL_CROP_FRACTION:
    return images.EVAL_CROP_FRACTION[policy]
  return dataset_config.crop.eval_fraction


def _needs_size(name, shape):
  return UserError(
      f"Dataset {name!r} has images of varying size {shape}: set the size to train at, "
      "e.g. --config.dataset.image_size=224 (random-resized crops for training, a centre "
      "crop for evaluation).")


def _sharded(ds, input_context):
  if input_context is None:
    return ds
  return ds.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)


def _by_file(num_files, input_context, what):
  """Whether to shard `what` by file: enough files for every input pipeline."""
  if input_context is None or input_context.num_input_pipelines == 1:
    return False
  by_file = num_files >= input_context.num_input_pipelines
  logging.info("%s: %d files over %d input pipelines: sharded by %s.", what, num_files,
               input_context.num_input_pipelines, "file" if by_file else "example")
  return by_file


# --------------------------------------------------------------------------- tfds


def _tfds_source(dataset_config, seed):
  builder = preparation.ensure_prepared(dataset_config)
  dataset_config = with_resolved_splits(dataset_config, builder)
  native = tuple(builder.info.features["image"].shape)
  variable = None in native[:2]
  if variable and not dataset_config.image_size:
    raise _needs_size(builder.name, native)
  kind = ENCODED if variable else PIXELS
  decoders = {"image": tfds.decode.SkipDecoding()} if kind == ENCODED else None
  train_split, eval_split = dataset_config.train_split, dataset_config.eval_split

  def read_train(input_context=None):
    read_config = tfds.ReadConfig(shuffle_seed=seed, input_context=input_context)
    return _images_and_labels(builder,
                              train_split,
                              shuffle_files=True,
                              read_config=read_config,
                              decoders=decoders)

  whole_train = read_train()  # made now: tfds.testing.mock_data only serves inside its block

  def train(input_context):
    if _by_file(_num_files(builder, train_split), input_context, f"{builder.name} {train_split}"):
      return read_train(input_context)  # tfds gives each input pipeline its own files
    return _sharded(whole_train, input_context)

  evaluation = _images_and_labels(builder, eval_split, decoders=decoders)
  train_examples = _num_examples(whole_train, builder, train_split)
  features = builder.info.features
  info = DatasetInfo(name=builder.name,
                     image_shape=_image_shape(dataset_config, native),
                     num_classes=features["label"].num_classes,
                     label_names=list(features["label"].names),
                     train_examples=train_examples,
                     eval_examples=_num_examples(evaluation, builder, eval_split),
                     eval_crop_fraction=_eval_crop(dataset_config))
  if kind == PIXELS:
    decoded = train_examples * int(np.prod(native)) if train_examples else None
  else:
    decoded = _estimated_decoded_bytes(evaluation, train_examples, info.image_shape[-1])
  return Source(info, train, evaluation, kind, None if variable else native, decoded,
                dataset_config)


def _images_and_labels(builder, split, **as_dataset_kwargs):
  # Not as_supervised: datasets built from files (a features.json, no builder class)
  # often declare no supervised keys; every kmodels dataset has 'image' and 'label'.
  return builder.as_dataset(
      split=split, **as_dataset_kwargs).map(lambda example: (example["image"], example["label"]))


def _num_examples(ds, builder, split):
  # The dataset's own count (right under tfds.testing.mock_data too); inside a TF1 graph
  # (an Estimator's input_fn) it may be symbolic, then the builder's split info counts.
  # Under mock_data in a graph neither is known: None (the Estimator does not need it).
  count = tf.get_static_value(ds.cardinality())
  if count is not None and count >= 0:
    return int(count)
  splits = builder.info.splits
  return splits[split].num_examples if split in splits else None


def _num_files(builder, split):
  """Files holding `split` (a slice counts the files it touches); 0 when unknown (mock)."""
  try:
    return len(builder.info.splits[split].file_instructions)
  except (KeyError, ValueError, TypeError, AttributeError):
    return 0


def _estimated_decoded_bytes(ds, examples, channels):
  """Decoded uint8 bytes of the whole split, from the sizes of its first images."""
  if not examples or not tf.executing_eagerly():
    return None
  sizes = [
      int(np.prod(tf.shape(images.decode(image, channels)).numpy()))
      for image, _ in ds.take(_SIZE_SAMPLE)
  ]
  return int(np.mean(sizes) * examples) if sizes else None


def _available_splits(builder):
  return sorted(builder.info.splits.keys())


def check_split(dataset_config, split, key):
  """A UserError unless `split` selects examples that exist (tfds slicing syntax for tfds).

  Image folders name a missing split folder when they are opened.
  """
  examples = ("Examples: test, train[:90%], train[100:200], test[:1000]; see "
              "https://www.tensorflow.org/datasets/splits")
  if dataset_config.name == IMAGE_FOLDER and dataset_config.source != "synthetic":
    return
  try:
    tfds.core.ReadInstruction.from_spec(split)
  except (ValueError, AssertionError, TypeError) as e:
    raise UserError(f"{key}={split!r} is not a split tfds understands. {examples}.") from e
  if dataset_config.source == "synthetic":
    _synthetic_ranges(dataset_config, split, key)
    return
  builder = preparation.get_builder(dataset_config.name, dataset_config.data_dir)
  available = _available_splits(builder)
  if not available:
    return  # not prepared yet: preparation names what is missing
  try:
    selected = builder.info.splits[split].num_examples
  except (KeyError, ValueError, AssertionError, TypeError) as e:
    raise UserError(f"{key}={split!r}: {builder.name!r} has the splits "
                    f"{', '.join(available)}; this selects none of them. {examples}.") from e
  if selected <= 0:  # tfds counts a reversed slice (test[5:2]) as negative
    raise UserError(f"{key}={split!r} selects no examples of {builder.name!r} (its splits: " +
                    ", ".join(f"{n} {builder.info.splits[n].num_examples}" for n in available) +
                    ").")


def with_resolved_splits(dataset_config, builder=None):
  """config.dataset with an evaluation split that exists (tfds datasets; others as they are).

  A dataset without the default `test` split is evaluated on `validation` if it has one,
  else on a deterministic held-out slice: the last dataset.holdout_fraction of `train`,
  which training then does not see. Logged, and recorded in config.json by the trainer.
  """
  if dataset_config.source == "synthetic" or dataset_config.name == IMAGE_FOLDER:
    return dataset_config
  builder = builder or preparation.get_builder(dataset_config.name, dataset_config.data_dir)
  available = _available_splits(builder)
  eval_split = dataset_config.eval_split
  if not available or eval_split != DEFAULT_EVAL_SPLIT or eval_split in available:
    return dataset_config
  resolved = dataset_config.copy_and_resolve_references()
  if "validation" in available:
    resolved.eval_split = "validation"
  else:
    percent = round(100 * dataset_config.holdout_fraction)
    train = dataset_config.train_split
    resolved.train_split = f"{train}[:{100 - percent}%]"
    resolved.eval_split = f"{train}[{100 - percent}%:]"
  logging.info("%s has no %r split (it has %s): training on %r, evaluating on %r.", builder.name,
               eval_split, ", ".join(available), resolved.train_split, resolved.eval_split)
  return resolved


# --------------------------------------------------------------------------- image folders


def _folder_source(dataset_config, seed):
  folder = image_folder.open_folder(dataset_config.image_dir, dataset_config.train_split)
  if not dataset_config.image_size:
    raise _needs_size(f"image_folder {folder.root}", "(files of any size)")
  channels = dataset_config.channels or 3
  train_split = image_folder.read_split(folder, dataset_config.train_split, dataset_config,
                                        channels)
  eval_split = image_folder.read_split(folder, dataset_config.eval_split, dataset_config, channels)
  if train_split.labels:  # files form; the records were checked when they were written
    _check_class_coverage(folder.classes, train_split.labels, eval_split.labels, dataset_config)
  info = DatasetInfo(name=storage.basename(folder.root),
                     image_shape=_image_shape(dataset_config, (None, None, channels)),
                     num_classes=len(folder.classes),
                     label_names=list(folder.classes),
                     train_examples=train_split.examples,
                     eval_examples=eval_split.examples,
                     eval_crop_fraction=_eval_crop(dataset_config),
                     bad_files={
                         "train": len(train_split.bad),
                         "eval": len(eval_split.bad)
                     })
  if folder.is_records:
    train, evaluation = _records(train_split, seed), _records(eval_split, None)(None)
    kind = ENCODED
  else:
    train, evaluation = _files(train_split, seed), _files(eval_split, None)(None)
    kind = FILE
  return Source(info, train, evaluation, kind, None, train_split.decoded_bytes, dataset_config)


def _check_class_coverage(classes, train_labels, eval_labels, dataset_config):
  """Every class must have training images left after the bad files were skipped (a
  UserError); a class the evaluation split lacks is legal but logged: its accuracy is
  not measured."""
  untrained = [classes[c] for c in range(len(classes)) if c not in set(train_labels)]
  if untrained:
    raise UserError(f"Class {', '.join(untrained)} of split {dataset_config.train_split!r} "
                    "has no readable images left (every file of it was skipped as unreadable; "
                    "the log names them): add images or remove its folder.")
  unseen = [classes[c] for c in range(len(classes)) if c not in set(eval_labels)]
  if unseen:
    logging.warning(
        "Split %r has no images of %d of the %d classes (%s): the run trains "
        "them, but their accuracy is not measured (empty rows in the confusion "
        "matrix).", dataset_config.eval_split, len(unseen), len(classes), ", ".join(unseen))


def _files(split, seed):
  """train(input_context) over a split's files: each worker its own, reshuffled per epoch."""
  paths, labels = np.array(split.paths), np.array(split.labels, np.int64)

  def train(input_context):
    ds = _sharded(tf.data.Dataset.from_tensor_slices((paths, labels)), input_context)
    if seed is None:
      return ds
    # The whole list, not a buffer: folders are sorted by class.
    return ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

  return train


def _records(split, seed):
  """train(input_context) over a split's record shards, by file when there are enough."""
  files = np.array(split.paths)

  def train(input_context):
    by_file = _by_file(len(files), input_context, "image records")
    ds = tf.data.Dataset.from_tensor_slices(files)
    if by_file:
      ds = _sharded(ds, input_context)
    if seed is not None:
      ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.interleave(tf.data.TFRecordDataset,
                       cycle_length=min(len(files), 4),
                       num_parallel_calls=min(len(files), 4),
                       deterministic=True)
    ds = ds.map(image_folder.parse_record)
    return ds if by_file else _sharded(ds, input_context)

  return train


# --------------------------------------------------------------------------- synthetic


def _synthetic_source(dataset_config, seed):
  """Random uint8 images at the model's input shape, labels of the dataset's classes."""
  if dataset_config.name == IMAGE_FOLDER:
    folder = image_folder.open_folder(dataset_config.image_dir, dataset_config.train_split)
    native, names = (None, None, dataset_config.channels or 3), list(folder.classes)
    name = storage.basename(folder.root)
  else:
    builder = preparation.get_builder(dataset_config.name, dataset_config.data_dir)
    native = tuple(builder.info.features["image"].shape)
    names, name = list(builder.info.features["label"].names), builder.name
  if None in native[:2] and not dataset_config.image_size:
    raise _needs_size(name, native)
  shape = _image_shape(dataset_config, native)
  ranges = _synthetic_ranges(dataset_config, dataset_config.eval_split, "dataset.eval_split")
  info = DatasetInfo(name, shape, len(names), names, dataset_config.synthetic_train_examples,
                     sum(end - start for _, start, end in ranges), _eval_crop(dataset_config))
  splits = {
      "train": _random_split(info, info.train_examples, seed),
      "test": _random_split(info, dataset_config.synthetic_eval_examples, seed + 1)
  }
  evaluation = None
  for name, start, end in ranges:  # the eval split as its spec slices the two
    part = splits[name].skip(start).take(end - start)
    evaluation = part if evaluation is None else evaluation.concatenate(part)
  return Source(info, lambda input_context: _sharded(splits["train"], input_context), evaluation,
                PIXELS, shape, info.train_examples * int(np.prod(shape)), dataset_config)


def _synthetic_ranges(dataset_config, split, key):
  """[(train|test, start, end)] that `split` (tfds' slicing syntax) selects of the
  synthetic source's two splits, or a UserError: random images exist for these only."""
  sizes = {
      "train": dataset_config.synthetic_train_examples,
      "test": dataset_config.synthetic_eval_examples
  }
  splits = {name: types.SimpleNamespace(num_examples=n) for name, n in sizes.items()}
  try:
    parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(splits)
  except (KeyError, ValueError, AssertionError, TypeError) as e:
    raise UserError(f"{key}={split!r}: the synthetic source makes random images for the "
                    f"splits train ({sizes['train']}) and test ({sizes['test']}) only; "
                    "name one of them, or a slice such as test[:100].") from e
  ranges = [(p.splitname, p.from_ or 0, sizes[p.splitname] if p.to is None else p.to) for p in parts
           ]  # a whole split comes back as (None, None)
  if sum(end - start for _, start, end in ranges) <= 0:
    raise UserError(f"{key}={split!r} selects no examples of the synthetic source (train "
                    f"{sizes['train']}, test {sizes['test']}).")
  return ranges


def _random_split(info, num_examples, seed):
  rng = np.random.default_rng(seed)
  pixels = rng.integers(0, 256, size=(num_examples, *info.image_shape), dtype=np.uint8)
  labels = rng.integers(0, info.num_classes, size=(num_examples,), dtype=np.int64)
  return tf.data.Dataset.from_tensor_slices((pixels, labels))
