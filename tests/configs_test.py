"""Every shipped launch.train config trains 2 steps on synthetic data, as its user starts it.

Only what the machine lacks is changed: the data (synthetic images of the dataset's
shapes, or of a small test-made image folder), the steps, the image size (each model's
smallest, so ImageNet architectures train in seconds), a TPU (the default strategy), XLA
(off, for time) and a weights file (one the test writes in Keras Applications' format).
Everything else, the recipe included, runs as configured.
"""

import os
import re

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil
from kmodels import models, training
from kmodels.data import sources
from kmodels.models import applications

CONFIG_DIR = os.path.join(testutil.REPO_ROOT, "configs")


def _train_configs():
  names = []
  for filename in sorted(os.listdir(CONFIG_DIR)):
    if not filename.endswith(".py"):  # configs/__pycache__ once a config has been imported
      continue
    with open(os.path.join(CONFIG_DIR, filename)) as f:
      if re.search(r"python -m launch\.train --config=configs/" + re.escape(filename), f.read()):
        names.append(filename)
  return names


def _load(filename):
  return testutil.shipped_config_module(filename).get_config()


class ShippedConfigsTest(parameterized.TestCase):

  def _shrunk(self, config):
    config.dataset.source = "synthetic"
    config.dataset.synthetic_train_examples = config.dataset.synthetic_eval_examples = 8
    config.train.batch_size = 4
    config.train.steps_per_epoch = 2
    config.train.epochs = 1
    if config.model.freeze_backbone_epochs:  # one head-only step, then one of the whole
      config.model.freeze_backbone_epochs, config.train.epochs = 1, 2
      config.train.steps_per_epoch = 1
    if config.dataset.image_size:
      config.dataset.image_size = max(models.REGISTRY[config.model.name].min_size, 32)
    # XLA off: compiling ResNet-50's step takes a minute on 2 cores (matrix_test trains an
    # ImageNet architecture under XLA with every strategy).
    config.xla = False
    if config.distribution.strategy == "tpu":
      config.distribution.strategy = "default"  # no TPU here (tpu_test covers its setup)
    if config.dataset.name == sources.IMAGE_FOLDER:
      config.dataset.image_dir = self.create_tempdir().full_path
      testutil.write_image_folder(config.dataset.image_dir, per_class=3)
    if config.model.weights:
      config.model.weights = self._weights_file(config)
    return config

  def _weights_file(self, config):
    """A "notop" .h5 of the config's architecture, as Keras Applications distributes."""
    size = config.dataset.image_size
    path = os.path.join(self.create_tempdir().full_path, "backbone_notop.h5")
    applications.backbone(config.model.name, (size, size, 3)).save_weights(path)
    return path

  def test_every_train_config_is_found(self):
    self.assertContainsSubset(
        {
            "cifar_googlenet.py", "imagenet_resnet50.py", "image_folder_finetune.py",
            "fashion_mnist_quickstart.py"
        }, _train_configs())

  @parameterized.parameters(_train_configs())
  def test_trains_two_steps_on_synthetic_data(self, filename):
    config = _load(filename)
    if config.trainer in ("estimator", "keras_estimator") and not testutil.HAS_ESTIMATOR:
      self.skipTest("tf.estimator exists on the full lane only")
    config = self._shrunk(config)
    metrics = training.train_and_evaluate(config, self.create_tempdir().full_path)
    self.assertEqual(metrics["status"], "completed")
    self.assertEqual(metrics["epochs_completed"], config.train.epochs)
    self.assertLen(metrics["history"], config.train.epochs)


if __name__ == "__main__":
  absltest.main()
