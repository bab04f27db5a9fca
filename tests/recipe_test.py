"""The training recipe's optimizer parts, each tested for its effect on the weights."""

import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tests import testutil
from kmodels import data, models, optimizers, training, validation
from kmodels.errors import UserError


def _optimizer_config(**changes):
  config = testutil.tiny_config().train.optimizer
  config.update(changes)
  return config


def _model():
  tf.keras.utils.set_random_seed(0)
  model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3),
                               tf.keras.layers.BatchNormalization()])
  model.layers[1].gamma.assign(tf.fill([3], 2.0))  # away from 1 and 0, so decay would show
  model.layers[1].beta.assign(tf.fill([3], 0.5))
  return model


def _step(optimizer, model, gradient_of):
  """One optimizer step with the given gradient per variable; returns (before, after)."""
  before = {v.name: v.numpy().copy() for v in model.trainable_variables}
  optimizer.apply_gradients(
      [(tf.constant(gradient_of(v), tf.float32), v) for v in model.trainable_variables])
  return before, {v.name: v.numpy() for v in model.trainable_variables}


def _exported_predictions(config, workdir):
  """(probabilities, labels) of the run's evaluation split, by its export (a fresh load)."""
  exported = tf.saved_model.load(os.path.join(workdir, "export"))
  datasets = data.load(config.dataset, config.train.batch_size, config.train.seed)
  probabilities, labels = [], []
  for images, batch_labels in datasets.eval:
    pixels = tf.cast(tf.round(images * 255), tf.uint8)
    probabilities.append(exported.signatures["serving_default"](images=pixels)
                         ["probabilities"].numpy())
    labels.append(batch_labels.numpy())
  return np.concatenate(probabilities), np.concatenate(labels)


class RecipeTest(parameterized.TestCase):

  @parameterized.parameters("sgd", "adam")
  def test_decoupled_weight_decay_shrinks_kernels_only(self, name):
    lr, decay = 0.1, 0.5
    optimizer = optimizers.build_optimizer(
        _optimizer_config(name=name, learning_rate=lr, weight_decay=decay))
    model = _model()
    # Zero gradients: any change is the decay alone (Adam's step is 0 with zero moments).
    before, after = _step(optimizer, model, lambda v: np.zeros(v.shape))
    for variable_name, value in after.items():
      if "kernel" in variable_name:
        np.testing.assert_allclose(value, before[variable_name] * (1 - lr * decay),
                                   rtol=1e-6)
      else:  # bias, BatchNorm gamma and beta
        np.testing.assert_array_equal(value, before[variable_name], err_msg=variable_name)

  def test_weight_decay_everything_decays_biases_and_norm_scales_too(self):
    optimizer = optimizers.build_optimizer(_optimizer_config(
        name="sgd", learning_rate=0.1, weight_decay=0.5, weight_decay_everything=True))
    before, after = _step(optimizer, _model(), lambda v: np.zeros(v.shape))
    for variable_name, value in after.items():
      np.testing.assert_allclose(value, before[variable_name] * 0.95, rtol=1e-6)

  def test_clipping_by_global_norm_caps_the_whole_step(self):
    gradient_of = lambda v: np.full(v.shape, 10.0)
    for clip, expected_norm in ((None, None), (1.0, 1.0)):
      optimizer = optimizers.build_optimizer(_optimizer_config(
          name="sgd", learning_rate=1.0, clip_global_norm=clip))
      before, after = _step(optimizer, _model(), gradient_of)
      step = np.sqrt(sum(np.sum((after[k] - before[k]) ** 2) for k in after))
      if expected_norm is None:
        gradient_norm = np.sqrt(sum(10.0 ** 2 * before[k].size for k in before))
        self.assertAlmostEqual(step, gradient_norm, places=3)
      else:
        self.assertAlmostEqual(step, expected_norm, places=5)

  def test_the_learning_rate_scales_with_the_global_batch_and_says_so(self):
    config = _optimizer_config(name="sgd", learning_rate=0.1, scale_by_batch=True)
    self.assertAlmostEqual(optimizers.base_learning_rate(config, 1024), 0.4)
    with self.assertLogs(level="INFO") as logs:
      optimizer = optimizers.build_optimizer(config, batch_size=512)
    self.assertAlmostEqual(float(optimizer.learning_rate), 0.2, places=6)
    self.assertIn("Learning rate 0.1 x batch 512 / 256 = 0.2", "\n".join(logs.output))
    config.scale_by_batch = False
    self.assertAlmostEqual(optimizers.base_learning_rate(config, 1024), 0.1)

  @parameterized.parameters(False, True)
  def test_label_smoothing_is_cross_entropy_against_smoothed_targets(self, from_logits):
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(6, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=6)
    probabilities = tf.nn.softmax(scores).numpy()
    smoothing = 0.2
    targets = np.full((6, 5), smoothing / 5) + (1 - smoothing) * np.eye(5)[labels]
    expected = np.mean(-np.sum(targets * np.log(probabilities), axis=1))
    loss = models.SmoothedSparseCrossentropy(from_logits, smoothing)
    given = scores if from_logits else probabilities
    self.assertAlmostEqual(float(loss(labels, given)), expected, places=4)
    plain = models.loss("shallownet", label_smoothing=0.0)
    self.assertNotAlmostEqual(float(plain(labels, probabilities)), expected, places=3)

  @parameterized.parameters("fit", "custom_loop")
  def test_both_trainers_use_the_smoothed_loss(self, trainer):
    config = testutil.tiny_config(dataset__source="synthetic", trainer=trainer,
                                  model__name="mlp", train__label_smoothing=0.3)
    workdir = self.create_tempdir().full_path
    metrics = training.train_and_evaluate(config, workdir)
    self.assertNotIn("test_top5_accuracy", metrics)  # 10 classes: top-1 only
    # The test loss the trainer reports is the smoothed cross-entropy of its predictions.
    probabilities, labels = _exported_predictions(config, workdir)
    targets = np.full(probabilities.shape, 0.03) + 0.7 * np.eye(10)[labels]
    smoothed = np.mean(-np.sum(targets * np.log(probabilities), axis=1))
    plain = np.mean(-np.log(probabilities[np.arange(len(labels)), labels]))
    self.assertAlmostEqual(metrics["test_loss"], smoothed, delta=1e-3)
    self.assertGreater(abs(plain - smoothed), 0.01)

  @parameterized.parameters("fit", "custom_loop")
  def test_top5_accuracy_is_reported_from_20_classes_on(self, trainer):
    config = testutil.tiny_config(dataset__source="synthetic", dataset__name="cifar100",
                                  trainer=trainer, model__name="mlp")
    workdir = self.create_tempdir().full_path
    metrics = training.train_and_evaluate(config, workdir)
    probabilities, labels = _exported_predictions(config, workdir)
    top5 = np.argsort(-probabilities, axis=1)[:, :5]
    expected = np.mean([label in best for label, best in zip(labels, top5)])
    self.assertAlmostEqual(metrics["test_top5_accuracy"], expected, places=5)
    self.assertGreaterEqual(metrics["test_top5_accuracy"], metrics["test_accuracy"])

  @parameterized.parameters(("weight_decay", 1.5, "weight_decay must be in"),
                            ("clip_global_norm", 0.0, "clip_global_norm must be in"),
                            ("weight_decay", -0.1, "weight_decay must be in"))
  def test_out_of_range_recipe_values_are_refused(self, key, value, message):
    config = testutil.tiny_config()
    config.train.optimizer[key] = value
    with self.assertRaisesRegex(UserError, message):
      validation.validate(config)

  @absltest.skipUnless(testutil.HAS_ESTIMATOR, "tf.estimator exists on the full lane only")
  def test_estimator_trainers_refuse_the_recipe_they_cannot_apply(self):
    config = testutil.tiny_config(trainer="estimator")
    config.train.optimizer.weight_decay = 0.1
    with self.assertRaisesRegex(UserError, "trainer=estimator takes TF1 optimizers without "
                                "train.optimizer.weight_decay"):
      validation.validate(config)


if __name__ == "__main__":
  absltest.main()
