r"""The plain Keras path on the data of a config, beside kmodels' (README Results, "Against
plain Keras").

  python -m launch.plain_keras --config=configs/base.py \
      --config.dataset.name=image_folder --config.dataset.image_dir=DIR \
      --config.dataset.image_size=32 --config.dataset.channels=1 \
      --config.model.name=shallownet --config.train.epochs=3
  python -m launch.plain_keras --config=configs/base.py --config.dataset.name=fashion_mnist \
      --config.model.name=shallownet --config.train.epochs=3

What a Keras user writes for the same data: for a folder,
`tf.keras.utils.image_dataset_from_directory` (each file resized to image_size); for a tfds
dataset, tfds' Keras tutorial (`tfds.load(..., as_supervised=True)`, cache, a shuffle over
the whole split, batch); pixels / 255, no augmentation, and `model.fit`, with the run's own
model, optimizer, schedule, batch size, epochs and seed from the same config, so the only
difference from `launch.train` with that config is kmodels' data path and recipe defaults.
Prints the test accuracy as JSON.
"""

import json
import os
import time

from absl import app
from absl import flags
from ml_collections import config_flags

from kmodels import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "A launch.train config file.")


def _folder_splits(tf, config):
  """(train, test, image shape, classes) of an image folder, as Keras reads one."""
  size, channels = config.dataset.image_size, config.dataset.channels or 3

  def folder(split, shuffle):
    return tf.keras.utils.image_dataset_from_directory(
        os.path.join(config.dataset.image_dir, split), image_size=(size, size),
        color_mode="grayscale" if channels == 1 else "rgb", batch_size=config.train.batch_size,
        shuffle=shuffle, seed=config.train.seed).map(lambda x, y: (x / 255.0, y))

  num_classes = len(os.listdir(os.path.join(config.dataset.image_dir,
                                            config.dataset.train_split)))
  return (folder(config.dataset.train_split, True), folder(config.dataset.eval_split, False),
          (size, size, channels), num_classes)


def _tfds_splits(tf, config):
  """(train, test, image shape, classes) of a prepared tfds dataset, as tfds' Keras
  tutorial reads one."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  def split(name, training):
    ds = tfds.load(config.dataset.name, split=name, as_supervised=True,
                   data_dir=config.dataset.data_dir, download=False)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32) / 255.0, y)).cache()
    if training:
      ds = ds.shuffle(int(ds.cardinality()), seed=config.train.seed)
    return ds.batch(config.train.batch_size).prefetch(tf.data.AUTOTUNE)

  info = tfds.builder(config.dataset.name, data_dir=config.dataset.data_dir).info
  return (split(config.dataset.train_split, True), split(config.dataset.eval_split, False),
          info.features["image"].shape, info.features["label"].num_classes)


def main(argv):
  del argv
  runtime.configure()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (after runtime.configure)
  from kmodels import models, optimizers, precision  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if config.dataset.name == "image_folder":
    train, test, image_shape, num_classes = _folder_splits(tf, config)
  else:
    train, test, image_shape, num_classes = _tfds_splits(tf, config)
  tf.keras.utils.set_random_seed(config.train.seed)
  steps_per_epoch = int(train.cardinality())
  with precision.policy("float32"):
    model = models.build_model(config.model.name, image_shape, num_classes)
    optimizer = optimizers.build_optimizer(config.train.optimizer,
                                           steps_per_epoch * config.train.epochs,
                                           config.train.batch_size)
    models.compile_classifier(model, config.model.name, optimizer)
  start = time.perf_counter()
  # Validation each epoch, as launch.train does: its train_seconds include it too.
  model.fit(train, epochs=config.train.epochs, validation_data=test, verbose=2)
  train_seconds = time.perf_counter() - start
  results = model.evaluate(test, verbose=0, return_dict=True)
  print(json.dumps({"path": "plain Keras", "test_accuracy": results["accuracy"],
                    "test_loss": results["loss"], "train_seconds": train_seconds}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
