r"""The plain Keras path on an image folder, beside kmodels' (README Results, "Against plain Keras").

  python -m launch.plain_keras --config=configs/base.py \
      --config.dataset.name=image_folder --config.dataset.image_dir=DIR \
      --config.dataset.image_size=32 --config.dataset.channels=1 \
      --config.model.name=shallownet --config.train.epochs=3

What a Keras user writes for the same folder: `tf.keras.utils.image_dataset_from_directory`
(each file resized to image_size, pixels / 255, no augmentation) and `model.fit`, with the
run's own model, optimizer, schedule, batch size, epochs and seed from the same config, so
the only difference from `launch.train` with that config is kmodels' data path and recipe
defaults. Prints the test accuracy as JSON.
"""

import json
import os

from absl import app
from absl import flags
from ml_collections import config_flags

from kmodels import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "A launch.train config file.")


def main(argv):
  del argv
  runtime.configure()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (after runtime.configure)
  from kmodels import models, optimizers, precision  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  size, channels = config.dataset.image_size, config.dataset.channels or 3

  def folder(split, shuffle):
    return tf.keras.utils.image_dataset_from_directory(
        os.path.join(config.dataset.image_dir, split), image_size=(size, size),
        color_mode="grayscale" if channels == 1 else "rgb", batch_size=config.train.batch_size,
        shuffle=shuffle, seed=config.train.seed).map(lambda x, y: (x / 255.0, y))

  tf.keras.utils.set_random_seed(config.train.seed)
  train, test = folder(config.dataset.train_split, True), folder(config.dataset.eval_split,
                                                                  False)
  num_classes = len(os.listdir(os.path.join(config.dataset.image_dir,
                                            config.dataset.train_split)))
  steps_per_epoch = int(train.cardinality())
  with precision.policy("float32"):
    model = models.build_model(config.model.name, (size, size, channels), num_classes)
    optimizer = optimizers.build_optimizer(config.train.optimizer,
                                           steps_per_epoch * config.train.epochs,
                                           config.train.batch_size)
    models.compile_classifier(model, config.model.name, optimizer)
  model.fit(train, epochs=config.train.epochs, verbose=2)
  results = model.evaluate(test, verbose=0, return_dict=True)
  print(json.dumps({"path": "plain Keras", "test_accuracy": results["accuracy"],
                    "test_loss": results["loss"]}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config"])
  app.run(main)
