"""The model zoo: one network in three styles is one function; everything serializes."""

import os

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil  # noqa: F401  (imports kmodels first)
import numpy as np
import tensorflow as tf

from kmodels import models

MNIST = (28, 28, 1)
TWINS = {
    "mlp": ("mlp", "mlp_functional", "mlp_subclass"),
    "shallownet": ("shallownet", "shallownet_functional", "shallownet_subclass"),
    "minivggnet": ("minivggnet", "minivggnet_sequential", "minivggnet_functional"),
    "minigooglenet": ("minigooglenet", "minigooglenet_subclass"),
}


def _images(n=3, shape=MNIST, seed=0):
  return np.random.default_rng(seed).random((n, *shape), dtype=np.float32)


class StylesTest(parameterized.TestCase):

  @parameterized.named_parameters(*TWINS.items())
  def test_same_network_in_every_style_computes_the_same_function(self, names):
    tf.keras.utils.set_random_seed(1)
    built = [models.build_model(n, MNIST, 10) for n in names]
    self.assertLen({m.count_params() for m in built}, 1, [m.count_params() for m in built])
    reference, images = built[0], _images()
    for twin in built[1:]:
      self.assertFalse(np.allclose(twin(images), reference(images)))  # fresh weights differ
      models.copy_weights(reference, twin)
      np.testing.assert_allclose(twin(images, training=False),
                                 reference(images, training=False),
                                 atol=1e-5)

  def test_copy_weights_refuses_different_architectures(self):
    mlp = models.build_model("mlp", MNIST, 10)
    with self.assertRaisesRegex(ValueError, "not the same architecture"):
      models.copy_weights(mlp, models.build_model("minivggnet", MNIST, 10))
    with self.assertRaisesRegex(ValueError, "weight shapes differ"):
      models.copy_weights(mlp, models.build_model("mlp_subclass", MNIST, 10, hidden_units=8))

  def test_functional_mlp_is_named_mnist_model(self):
    self.assertEqual(models.build_model("mlp_functional", MNIST, 10).name, "mnist_model")

  def test_seed_d_models_output_logits_in_float32(self):
    for name in ("cnnblocks", "resnet_like"):
      self.assertTrue(models.REGISTRY[name].logits)
      out = models.build_model(name, MNIST, 10)(_images())
      self.assertEqual(out.dtype, tf.float32)
      self.assertFalse(np.allclose(np.sum(out, axis=-1), 1.0, atol=1e-3))

  def test_resblock_adds_the_identity_mapping_before_the_third_block(self):
    from kmodels.models import blocks  # pylint: disable=g-import-not-at-top
    block = blocks.ResBlock([4, 6, 8])
    x = tf.constant(_images(2, (8, 8, 3)))
    out = block(x)
    self.assertEqual(out.shape, (2, 4, 4, 8))
    y = block.cnn2(block.cnn1(x))
    expected = block.pool(block.cnn3(y + block.identity_mapping(x)))
    np.testing.assert_allclose(out, expected, atol=1e-6)

  @parameterized.parameters("minivggnet", "resnet_like", "minigooglenet_subclass",
                            "cifar_cnn_subclass")
  def test_subclassed_summary_has_output_shapes(self, name):
    model = models.build_model(name, MNIST, 10)
    lines = []
    models.summary_model(model, MNIST).summary(print_fn=lines.append)
    text = "\n".join(lines)
    self.assertNotIn("multiple", text)
    self.assertIn("(None, 10)", text)
    self.assertIn(f"Total params: {model.count_params()} ", text)


class SerializationTest(parameterized.TestCase):

  @parameterized.parameters(testutil.SMALL_MODELS)
  def test_config_round_trip_and_savedmodel_reload_predict_the_same(self, name):
    model = models.build_model(name, MNIST, 10)
    images = _images()
    expected = model(images, training=False)

    clone = type(model).from_config(model.get_config())
    clone.build((None, *MNIST))
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(images, training=False), expected, atol=1e-6)

    path = os.path.join(self.create_tempdir().full_path, "export")
    model.save(path, save_format="tf")
    reloaded = tf.keras.models.load_model(path)
    self.assertEqual(type(reloaded), type(model))
    np.testing.assert_allclose(reloaded(images, training=False), expected, atol=1e-6)


if __name__ == "__main__":
  absltest.main()
