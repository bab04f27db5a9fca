"""Model registry: exact parameter counts, shapes, one real training step per model."""

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil  # noqa: F401  (imports kmodels first)
import numpy as np
import tensorflow as tf

from kmodels import models
from kmodels.errors import UserError

CIFAR = (32, 32, 3)
MNIST = (28, 28, 1)


class ModelsTest(parameterized.TestCase):

  @parameterized.parameters(
      # Parameter counts published by the CIFAR styles tutorial; the MLP's is 784*256+256 +
      # 256*10+10.
      ("shallownet", CIFAR, 328_586),
      ("minigooglenet", CIFAR, 1_656_250),
      ("mlp", MNIST, 203_530),
  )
  def test_parameter_count_matches_seed(self, name, shape, expected):
    self.assertEqual(models.build_model(name, shape, 10).count_params(), expected)

  def test_minivggnet_parameter_count_follows_its_layers(self):
    conv = lambda cin, cout: 9 * cin * cout + cout
    bn = lambda c: 4 * c
    expected = (conv(3, 32) + bn(32) + 3 * (conv(32, 32) + bn(32))
                + (8 * 8 * 32) * 512 + 512 + bn(512) + 512 * 10 + 10)
    self.assertEqual(models.build_model("minivggnet", CIFAR, 10).count_params(), expected)

  @parameterized.product(name=sorted(models.REGISTRY), shape_and_classes=[(CIFAR, 10),
                                                                          (MNIST, 3)])
  def test_output_is_one_score_per_class(self, name, shape_and_classes):
    shape, num_classes = shape_and_classes
    model = models.build_model(name, shape, num_classes)
    out = model(np.random.rand(2, *shape).astype("float32"), training=False)
    self.assertEqual(out.shape, (2, num_classes))
    if not models.REGISTRY[name].logits:
      np.testing.assert_allclose(np.sum(out, axis=-1), 1.0, rtol=1e-5)

  @parameterized.parameters(sorted(models.REGISTRY))
  def test_trains_one_step_and_changes_weights(self, name):
    tf.keras.utils.set_random_seed(0)
    model = models.build_model(name, MNIST, 10)
    model.compile("adam", models.loss(name))
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(np.random.rand(4, *MNIST).astype("float32"),
                                np.array([0, 1, 2, 3]))
    self.assertTrue(np.isfinite(loss))
    changed = [not np.allclose(a, b.numpy()) for a, b in zip(before, model.trainable_weights)]
    self.assertTrue(all(changed), f"{name}: some weights did not move after a step")

  def test_float32_softmax_under_mixed_precision(self):
    policy = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
      model = models.build_model("minigooglenet", CIFAR, 10)
    finally:
      tf.keras.mixed_precision.set_global_policy(policy)
    self.assertEqual(model.layers[1].compute_dtype, "bfloat16")
    self.assertEqual(model.output.dtype, tf.float32)

  def test_unknown_name_lists_every_model_with_its_style(self):
    with self.assertRaises(UserError) as ctx:
      models.build_model("resnet999", CIFAR, 10)
    for name, entry in models.REGISTRY.items():
      self.assertIn(f"{name} ({entry.style})", str(ctx.exception))

  def test_unknown_builder_kwarg_is_a_user_error(self):
    with self.assertRaisesRegex(UserError, "does not accept.*'width'"):
      models.build_model("shallownet", CIFAR, 10, width=3)

  @parameterized.parameters("cifar_cnn_sequential", "cifar_cnn_subclass")
  def test_images_too_small_for_the_model_name_the_layer_and_other_models(self, name):
    with self.assertRaisesRegex(UserError, rf"model '{name}' can't be built for images of "
                                r"shape \(8, 8, 1\).*[Nn]egative dimension.*mlp, shallownet"):
      models.build_model(name, (8, 8, 1), 10)
    # The models it suggests do build for such images.
    for small in ("mlp", "shallownet", "minivggnet", "fastcnn"):
      models.build_model(small, (8, 8, 1), 10)


if __name__ == "__main__":
  absltest.main()
