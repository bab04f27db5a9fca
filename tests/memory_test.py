"""A batch that cannot fit the host is refused before the first step, with one that fits.

The estimate is counted from the built model (every layer's output per example, the
weights with their gradients and optimizer slots); the shipped ImageNet config as it is
(global batch 1024 at 224 px) is refused on a 2-core CPU host by the launcher with exit 2
and one line naming what it needs, what the host has and the batch that would fit.
"""

import os

from absl.testing import absltest
import tensorflow as tf

from kmodels import memory, precision
from kmodels.errors import UserError
from tests import testutil


def _small_model():
  inputs = tf.keras.Input((8, 8, 3))
  x = tf.keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8 x 8 x 4 = 256 per example
  x = tf.keras.layers.Flatten()(x)  # 256
  return tf.keras.Model(inputs, tf.keras.layers.Dense(10)(x))  # 10


class EstimateTest(absltest.TestCase):

  def test_every_layer_output_per_example_and_the_weights_four_times(self):
    model = _small_model()
    step = memory.estimate(model)
    self.assertEqual(step.per_example_bytes, (256 + 256 + 10) * 4)
    self.assertEqual(step.fixed_bytes, 16 * model.count_params())
    self.assertEqual(step.bytes(32), step.fixed_bytes + 32 * step.per_example_bytes)

  def test_mixed_precision_halves_the_activations(self):
    with precision.policy("mixed_bfloat16"):
      model = _small_model()
    self.assertEqual(memory.estimate(model).per_example_bytes, (256 + 256 + 10) * 2)

  def test_a_subclassed_model_is_not_estimated(self):

    class Tiny(tf.keras.Model):

      def __init__(self):
        super().__init__()
        self.dense = tf.keras.layers.Dense(3)

      def call(self, x):
        return self.dense(x)

    model = Tiny()
    model(tf.zeros([1, 4]))
    self.assertIsNone(memory.estimate(model))
    memory.check_fits(model, 10**9, 1, (4,), usable_bytes=1)  # nothing to refuse on

  def test_refused_above_the_margin_with_the_largest_power_of_two_that_fits(self):
    model = _small_model()
    step = memory.estimate(model)
    usable = step.bytes(100)
    memory.check_fits(model, 100, 1, (8, 8, 3), usable_bytes=usable)  # fits
    memory.check_fits(model, 140, 1, (8, 8, 3), usable_bytes=usable)  # within the margin
    with self.assertRaisesRegex(
        UserError, r"train.batch_size 1000 \(500 per replica\) at "
        r"8x8x3 needs about .* more than it has .*; "
        r"--config.train.batch_size=64 fits"):
      # Two replicas on this host hold 500 examples each; each has half of `usable`:
      # (100 examples' worth - one more copy of the weights) / 2 -> 39 -> 32 each.
      memory.check_fits(model, 1000, 2, (8, 8, 3), local_replicas=2, usable_bytes=usable)


class OutOfMemoryTest(absltest.TestCase):

  def test_memory_is_told_from_a_full_disk(self):
    oom = tf.errors.ResourceExhaustedError(
        None, None, "OOM when allocating tensor with shape[1024,64,112,112]")
    disk = tf.errors.ResourceExhaustedError(
        None, None, "/run/checkpoints/ckpt-2_temp/part-00000; No space left on device")
    self.assertTrue(memory.is_out_of_memory(oom))
    self.assertFalse(memory.is_out_of_memory(disk))
    message = str(memory.refused_after(oom, 1024, 1, (224, 224, 3)))
    self.assertIn("train.batch_size 1024 at 224x224x3 ran out of memory", message)
    self.assertIn("--config.train.batch_size=512", message)


class ShippedConfigTest(absltest.TestCase):

  def test_the_imagenet_config_as_shipped_is_refused_before_its_first_step(self):
    workdir = self.create_tempdir().full_path
    proc = testutil.call_launcher("train", "--config=configs/imagenet_resnet50.py",
                                  f"--workdir={workdir}", "--config.dataset.source=synthetic",
                                  "--config.xla=False")
    testutil.assert_user_error(self, proc,
                               "train.batch_size 1024 (1024 per replica) at 224x224x3 needs about",
                               "GB usable); --config.train.batch_size=", " fits")
    self.assertFalse(os.path.exists(os.path.join(workdir, "checkpoints")))


if __name__ == "__main__":
  absltest.main()
