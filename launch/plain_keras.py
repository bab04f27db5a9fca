r"""The peers' paths on the data of a config, beside kmodels' (README Results).

  python -m launch.plain_keras --config=configs/base.py \
      --config.dataset.name=image_folder --config.dataset.image_dir=DIR \
      --config.dataset.image_size=32 --config.dataset.channels=1 \
      --config.model.name=shallownet --config.train.epochs=3
  python -m launch.plain_keras --config=configs/fashion_mnist_quickstart.py \
      --path=tutorial --target_accuracy=0.9 --config.train.epochs=6

--path=plain (default) is what a Keras user writes for the same data: for a folder,
`tf.keras.utils.image_dataset_from_directory` (each file resized to image_size); for a tfds
dataset, tfds' Keras tutorial (`tfds.load(..., as_supervised=True)`, cache, a shuffle over
the whole split, batch); pixels / 255, no augmentation, and `model.fit`.
--path=tutorial is the CIFAR styles tutorial's path: the whole split as NumPy arrays
through `ImageDataGenerator.flow` with the tutorial's augmentation, and `model.fit`.
Both use the run's own model, optimizer, schedule, batch size, epochs and seed from the
same config, so the only difference from `launch.train` is the data path and kmodels'
recipe defaults. Validation on the test split each epoch, as launch.train does (its
train_seconds include it too).

With --target_accuracy the run stops after the first epoch whose test accuracy reaches it
(the schedule still spans config.train.epochs), for time to accuracy against kmodels.
Prints one JSON line: the final test accuracy and seconds, each epoch's cumulative seconds
and test accuracy, and the seconds to the target (null when it was not reached).
"""

import json
import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kmodels import models, optimizers, precision
from kmodels.tools import benchmark
from launch import common

_CONFIG = config_flags.DEFINE_config_file("config", None, "A launch.train config file.")
_PATH = flags.DEFINE_enum("path", "plain", ["plain", "tutorial"],
                          "plain: Keras' own input + fit; tutorial: ImageDataGenerator + fit.")
_TARGET = common.define_fraction("target_accuracy", None,
                                 "Stop after the first epoch whose test accuracy reaches this.")


def _folder_splits(config):
  """(train, test, image shape, classes) of an image folder, as Keras reads one."""
  size, channels = config.dataset.image_size, config.dataset.channels or 3

  def folder(split, shuffle):
    return tf.keras.utils.image_dataset_from_directory(
        os.path.join(config.dataset.image_dir, split),
        image_size=(size, size),
        color_mode="grayscale" if channels == 1 else "rgb",
        batch_size=config.train.batch_size,
        shuffle=shuffle,
        seed=config.train.seed).map(lambda x, y: (x / 255.0, y))

  num_classes = len(os.listdir(os.path.join(config.dataset.image_dir, config.dataset.train_split)))
  return (folder(config.dataset.train_split,
                 True), folder(config.dataset.eval_split,
                               False), (size, size, channels), num_classes)


def _tfds_splits(config):
  """(train, test, image shape, classes) of a prepared tfds dataset, as tfds' Keras
  tutorial reads one."""

  def split(name, training):
    ds = tfds.load(config.dataset.name,
                   split=name,
                   as_supervised=True,
                   data_dir=config.dataset.data_dir,
                   download=False)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y)).cache()
    if training:
      ds = ds.shuffle(int(ds.cardinality()), seed=config.train.seed)
    return ds.batch(config.train.batch_size).prefetch(tf.data.AUTOTUNE)

  info = tfds.builder(config.dataset.name, data_dir=config.dataset.data_dir).info
  return (split(config.dataset.train_split, True), split(config.dataset.eval_split, False),
          info.features["image"].shape, info.features["label"].num_classes)


def _tutorial_flow(train, config):
  """The training split as arrays through ImageDataGenerator, as the tutorial feeds fit."""
  images, labels = zip(*((x.numpy(), y.numpy()) for x, y in train))
  images, labels = np.concatenate(images), np.concatenate(labels)
  generator = tf.keras.preprocessing.image.ImageDataGenerator(**benchmark.TUTORIAL_AUGMENTATION)
  flow = generator.flow(images, labels, batch_size=config.train.batch_size, seed=config.train.seed)
  return flow, len(images) // config.train.batch_size


class _TimeToAccuracy(tf.keras.callbacks.Callback):
  """Each epoch's cumulative seconds (validation included) and test accuracy; stops the
  run at the first epoch that reaches `target`."""

  def __init__(self, target):
    super().__init__()
    self.target, self.epochs, self.seconds_to_target = target, [], None
    self._start = None

  def on_train_begin(self, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    seconds, accuracy = time.perf_counter() - self._start, float(logs["val_accuracy"])
    self.epochs.append({"epoch": epoch + 1, "seconds": seconds, "test_accuracy": accuracy})
    if self.target is not None and accuracy >= self.target:
      self.seconds_to_target = seconds
      self.model.stop_training = True


def main(argv):
  # Not common.start: the peers keep Keras' own logging and thread pools.
  common.refuse_stray_arguments(argv)
  config = _CONFIG.value
  if config.dataset.name == "image_folder":
    train, test, image_shape, num_classes = _folder_splits(config)
  else:
    train, test, image_shape, num_classes = _tfds_splits(config)
  tf.keras.utils.set_random_seed(config.train.seed)
  steps_per_epoch = int(train.cardinality())
  if _PATH.value == "tutorial":
    train, steps_per_epoch = _tutorial_flow(train, config)
  with precision.policy("float32"):
    model = models.build_model(config.model.name, image_shape, num_classes)
    optimizer = optimizers.build_optimizer(config.train.optimizer,
                                           steps_per_epoch * config.train.epochs,
                                           config.train.batch_size)
    models.compile_classifier(model, config.model.name, optimizer)
  timing = _TimeToAccuracy(_TARGET.value)
  model.fit(train,
            epochs=config.train.epochs,
            steps_per_epoch=steps_per_epoch,
            validation_data=test,
            callbacks=[timing],
            verbose=2)
  results = model.evaluate(test, verbose=0, return_dict=True)
  print(
      json.dumps({
          "path": _PATH.value,
          "test_accuracy": results["accuracy"],
          "test_loss": results["loss"],
          "train_seconds": timing.epochs[-1]["seconds"],
          "epochs": timing.epochs,
          "target_accuracy": _TARGET.value,
          "seconds_to_target": timing.seconds_to_target
      }))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main, flags_parser=common.parse_flags)
