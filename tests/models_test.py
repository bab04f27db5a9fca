"""Model registry: exact parameter counts, shapes, one real training step per model."""

import os

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil  # noqa: F401  (imports kmodels first)
import ml_collections
import numpy as np
import tensorflow as tf

from kmodels import models
from kmodels.errors import UserError
from kmodels.models import applications

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
    expected = (conv(3, 32) + bn(32) + 3 * (conv(32, 32) + bn(32)) + (8 * 8 * 32) * 512 + 512 +
                bn(512) + 512 * 10 + 10)
    self.assertEqual(models.build_model("minivggnet", CIFAR, 10).count_params(), expected)

  @parameterized.product(name=testutil.SMALL_MODELS, shape_and_classes=[(CIFAR, 10), (MNIST, 3)])
  def test_output_is_one_score_per_class(self, name, shape_and_classes):
    shape, num_classes = shape_and_classes
    model = models.build_model(name, shape, num_classes)
    out = model(np.random.rand(2, *shape).astype("float32"), training=False)
    self.assertEqual(out.shape, (2, num_classes))
    if not models.REGISTRY[name].logits:
      np.testing.assert_allclose(np.sum(out, axis=-1), 1.0, rtol=1e-5)

  @parameterized.parameters(testutil.SMALL_MODELS)
  def test_trains_one_step_and_changes_weights(self, name):
    tf.keras.utils.set_random_seed(0)
    model = models.build_model(name, MNIST, 10)
    model.compile("adam", models.loss(name))
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(np.random.rand(4, *MNIST).astype("float32"), np.array([0, 1, 2, 3]))
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

  def test_fastcnn_shape_settings_build_the_shape_they_name(self):
    # Set in a config file (the fast config leaves them at their defaults, so that
    # --config.model.name can switch it to a model without them).
    config = testutil.shipped_config_module("fashion_mnist_fast.py").get_config()
    config.model.filters, config.model.dense_units = (8, 16), 24
    model = models.build_from_config(config.model, MNIST, 10)
    bias_free_conv = lambda cin, cout: 9 * cin * cout
    bn = lambda c: 4 * c
    expected = (bias_free_conv(1, 8) + bn(8) + bias_free_conv(8, 16) + bn(16) + 7 * 7 * 16 * 24 +
                bn(24) + 24 * 10 + 10)
    self.assertEqual(model.count_params(), expected)
    config.model.filters = (0, 16)
    with self.assertRaisesRegex(UserError,
                                r"model.filters must be positive integers.*\(0, 16\)") as ctx:
      models.build_from_config(config.model, MNIST, 10)
    self.assertNotIn("smaller images", str(ctx.exception))  # a bad value, not a small image
    # Wider than any host: 3136 x 1e13 float32 weights exceed even the address space, so no
    # kernel setting lets the allocation succeed.
    config.model.filters, config.model.dense_units = (8, 16), 10**13
    with self.assertRaisesRegex(
        UserError, r"does not fit in this host's memory.*"
        r"shape\[784,10000000000000\].*smaller widths"):
      models.build_from_config(config.model, MNIST, 10)

  @parameterized.parameters("cifar_cnn_sequential", "cifar_cnn_subclass")
  def test_images_too_small_for_the_model_name_the_layer_and_other_models(self, name):
    with self.assertRaisesRegex(
        UserError, rf"model '{name}' can't be built for images of "
        r"shape \(8, 8, 1\).*[Nn]egative dimension.*mlp, shallownet"):
      models.build_model(name, (8, 8, 1), 10)
    # The models it suggests do build for such images.
    for small in ("mlp", "shallownet", "minivggnet", "fastcnn"):
      models.build_model(small, (8, 8, 1), 10)


IMAGENET_ARCHITECTURES = sorted(applications.ARCHITECTURES)


class ApplicationsTest(parameterized.TestCase):
  """The ImageNet architectures from tf.keras.applications, at small sizes."""

  def _grey_model_and_images(self, name):
    tf.keras.utils.set_random_seed(0)
    size = models.REGISTRY[name].min_size
    images = np.random.default_rng(0).random((2, size, size, 1), dtype=np.float32)
    return models.build_model(name, (size, size, 1), 3), images

  @parameterized.parameters(IMAGENET_ARCHITECTURES)
  def test_builds_for_grey_images_at_its_minimum_size(self, name):
    model, images = self._grey_model_and_images(name)
    out = model(images, training=False)
    self.assertEqual((2, 3), out.shape)
    np.testing.assert_allclose(np.sum(out, axis=-1), 1.0, rtol=1e-5)

  def test_trains_a_step(self):
    name = "mobilenet_v2"  # the cheapest; the others share the head
    model, images = self._grey_model_and_images(name)
    model.compile("adam", models.loss(name))
    head = model.get_layer("predictions").kernel.numpy().copy()
    self.assertTrue(np.isfinite(model.train_on_batch(images, np.array([0, 2]))))
    self.assertFalse(np.allclose(head, model.get_layer("predictions").kernel.numpy()))

  @parameterized.parameters(IMAGENET_ARCHITECTURES)
  def test_below_its_minimum_size_it_is_refused_up_front_naming_the_size(self, name):
    size = models.REGISTRY[name].min_size - 1
    with self.assertRaisesRegex(
        UserError, rf"'{name}' needs images of at least "
        r"\d+x\d+; got .*dataset.image_size=224"):
      models.build_model(name, (size, size, 3), 10)

  @parameterized.parameters(IMAGENET_ARCHITECTURES)
  def test_with_a_1000_class_head_it_has_keras_own_parameter_count(self, name):
    # E.g. ResNet-50: 25,636,712 (Keras Applications' table: 25.6 M).
    keras_name = applications.ARCHITECTURES[name].keras_name
    reference = getattr(tf.keras.applications, keras_name)(weights=None)
    ours = models.build_model(name, (224, 224, 3), 1000)
    self.assertEqual(reference.count_params(), ours.count_params())
    if name == "resnet50":
      self.assertEqual(ours.count_params(), 25_636_712)

  @parameterized.parameters(("caffe", tf.keras.applications.resnet50.preprocess_input),
                            ("tf", tf.keras.applications.mobilenet_v2.preprocess_input))
  def test_the_models_own_input_layers_preprocess_as_keras_does(self, mode, keras_preprocess):
    pixels = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3)).astype(np.float32)
    inputs = tf.keras.Input((8, 8, 3))
    ours = tf.keras.Model(inputs, applications.to_backbone_input(inputs, mode))
    np.testing.assert_allclose(ours(pixels / 255.0), keras_preprocess(pixels.copy()), atol=1e-3)


class XlaOnCpuTest(absltest.TestCase):

  def test_xla_on_cpus_is_warned_about(self):
    from kmodels import data  # pylint: disable=g-import-not-at-top
    from kmodels.trainers import keras  # pylint: disable=g-import-not-at-top
    config = testutil.tiny_config(dataset__source="synthetic",
                                  dataset__name="cifar10",
                                  model__name="mobilenet_v2",
                                  xla=True)
    info = data.load(config.dataset, 8, 0).info
    with self.assertLogs(level="WARNING") as logs:
      keras.build_and_compile(config, info, tf.distribute.get_strategy())
    self.assertIn("xla=True on CPUs", "\n".join(logs.output))
    config.xla = False
    with self.assertNoLogs(level="WARNING"):
      keras.warn_about_xla_on_cpu(config, tf.distribute.get_strategy())


class BackboneWeightsTest(absltest.TestCase):
  """model.weights: a Keras Applications "notop" .h5, made here in the real format."""

  def _notop_file(self, keras_name, shape=(32, 32, 3)):
    tf.keras.utils.set_random_seed(7)
    source = getattr(tf.keras.applications, keras_name)(include_top=False,
                                                        weights=None,
                                                        input_shape=shape)
    path = os.path.join(self.create_tempdir().full_path, f"{keras_name}_notop.h5")
    source.save_weights(path)  # what Keras Applications publishes: save_weights of notop
    return source, path

  def _config(self, name, weights):
    return ml_collections.ConfigDict({"name": name, "weights": weights})

  def test_the_loaded_backbone_holds_the_files_values_and_the_head_is_new(self):
    source, path = self._notop_file("MobileNetV2")
    model = models.build_from_config(self._config("mobilenet_v2", path), (32, 32, 3), 5)
    backbone = applications.backbone_of(model)
    for loaded, saved in zip(backbone.weights, source.weights):
      np.testing.assert_array_equal(loaded.numpy(), saved.numpy(), err_msg=loaded.name)
    self.assertEqual((1280, 5), model.get_layer("predictions").kernel.shape)

  def test_a_file_of_another_architecture_is_refused_with_what_it_holds(self):
    _, path = self._notop_file("MobileNetV2")
    with self.assertRaisesRegex(
        UserError, r"does not fit 'resnet50'.*the file holds \d+ "
        r"layers, from .*ResNet50 without its top has \d+ layers"):
      models.build_from_config(self._config("resnet50", path), (32, 32, 3), 5)

  def test_imagenet_a_missing_file_and_a_tutorial_model_say_what_to_do(self):
    for config, message in (
        (self._config("resnet50", "imagenet"), "model.weights takes a file.*notop.h5"),
        (self._config("resnet50", "/no/such/file.h5"), "does not exist"),
        (self._config("resnet50", "gs://no-such-bucket-kmodels/w.h5"),
         "model.weights gs://no-such-bucket-kmodels/w.h5.*(unreachable|does not exist)"),
        (self._config("shallownet", "/any.h5"), "'shallownet' has none")):
      with self.subTest(config=config.weights), self.assertRaisesRegex(UserError, message):
        models.build_from_config(config, (32, 32, 3), 5)


if __name__ == "__main__":
  absltest.main()
