"""The training recipe's optimizer parts, each tested for its effect on the weights."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tests import testutil
from kmodels import optimizers, validation
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
