"""Config validation: every rule rejects what it should, with a message that names the key."""

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil

from kmodels import validation
from kmodels.errors import UserError
import configs.cifar_googlenet
import configs.cifar_minivgg
import configs.cifar_shallownet
import configs.fashion_mnist_quickstart
import configs.mnist_mlp
from configs import base


class ValidationTest(parameterized.TestCase):

  @parameterized.parameters(base, configs.cifar_googlenet, configs.cifar_minivgg,
                            configs.cifar_shallownet, configs.fashion_mnist_quickstart,
                            configs.mnist_mlp)
  def test_every_shipped_config_is_valid(self, module):
    validation.validate(module.get_config())

  @parameterized.parameters(
      ("model__name", "vgg99", "model.name 'vgg99'.*minivggnet \\(subclassed\\)"),
      ("dataset__source", "kaggle", "dataset.source='kaggle'.*tfds, synthetic"),
      ("trainer", "keras", "trainer='keras'.*fit"),
      ("distribution__strategy", "mesh", "distribution.strategy='mesh'.*mirrored"),
      ("precision", "float16", "precision='float16'.*mixed_bfloat16"),
      ("train__optimizer__name", "lamb", "train.optimizer.name='lamb'.*adam"),
      ("train__batch_size", 0, "train.batch_size must be a positive integer"),
      ("train__batch_size", -8, "train.batch_size must be a positive integer"),
      ("train__epochs", 0, "train.epochs must be a positive integer"),
      ("train__steps_per_epoch", 0, "train.steps_per_epoch must be a positive integer or None"),
      ("train__optimizer__learning_rate", 0.0, "learning_rate must be > 0"),
      ("train__optimizer__momentum", 1.5, "momentum must be in \\[0.0, 1.0\\)"),
      ("dataset__augment__zoom", -0.1, "augment.zoom must be in"),
  )
  def test_bad_value_is_rejected_with_the_key_named(self, key, value, message):
    with self.assertRaisesRegex(UserError, message):
      validation.validate(testutil.tiny_config(**{key: value}))

  def test_time_decay_follows_overridden_epochs(self):
    config = configs.cifar_googlenet.get_config()
    self.assertAlmostEqual(config.train.optimizer.time_decay, 1e-2 / 60)
    config.train.epochs = 10
    self.assertAlmostEqual(config.train.optimizer.time_decay, 1e-2 / 10)


if __name__ == "__main__":
  absltest.main()
