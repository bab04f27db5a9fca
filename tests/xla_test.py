"""What a TPU asks of every model: an XLA-compilable train step with static shapes, and
float32 outputs under the bfloat16 policy."""

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil  # noqa: F401  (imports kmodels first)
import numpy as np
import tensorflow as tf

from kmodels import models, precision

BATCH = 4
SHAPE = (32, 32, 3)
CLASSES = 10


def _train_step(model):
  loss_fn = models.loss(model.name_in_registry)
  optimizer = tf.keras.optimizers.SGD(0.01)
  optimizer.build(model.trainable_variables)

  @tf.function(jit_compile=True)
  def step(images, labels):
    with tf.GradientTape() as tape:
      loss = loss_fn(labels, model(images, training=True))
    gradients = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    return loss

  return step


def _batch():
  images = tf.constant(np.random.default_rng(0).random((BATCH, *SHAPE), np.float32))
  labels = tf.constant(np.arange(BATCH) % CLASSES, tf.int64)
  return images, labels


def _build(name):
  model = models.build_model(name, SHAPE, CLASSES)
  model.name_in_registry = name
  return model


class XlaTest(parameterized.TestCase):

  @parameterized.parameters(*testutil.SMALL_MODELS)
  def test_train_step_lowers_to_xla_with_static_shapes(self, name):
    step = _train_step(_build(name))
    # Lowering to HLO is where XLA rejects unsupported ops and unknown shapes; it skips
    # the slow CPU code generation that a real TPU would not use anyway.
    hlo = step.experimental_get_compiler_ir(*_batch())(stage="hlo")
    self.assertIn("HloModule", hlo)
    self.assertIn(f"f32[{BATCH},{SHAPE[0]},{SHAPE[1]},{SHAPE[2]}]", hlo)

  def test_compiled_step_runs_and_learns(self):
    step = _train_step(_build("shallownet"))
    images, labels = _batch()
    losses = [float(step(images, labels)) for _ in range(5)]
    self.assertLess(losses[-1], losses[0])

  @parameterized.parameters(*testutil.SMALL_MODELS)
  def test_bfloat16_policy_keeps_float32_outputs(self, name):
    with precision.policy("mixed_bfloat16"):
      model = models.build_model(name, SHAPE, CLASSES)
    outputs = model(_batch()[0], training=False)
    self.assertEqual(outputs.dtype, tf.float32)
    compute_dtypes = {
        layer.compute_dtype
        for layer in model.submodules
        if isinstance(layer, tf.keras.layers.Layer)
    }
    self.assertIn("bfloat16", compute_dtypes)  # the body does run in bfloat16


if __name__ == "__main__":
  absltest.main()
