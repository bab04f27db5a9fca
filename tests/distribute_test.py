"""Strategies from config, for real: MirroredStrategy over two logical CPU devices."""

from absl.testing import absltest

from tests import testutil
import tensorflow as tf

# Two logical CPUs must be configured before TensorFlow initializes its devices, which
# is why this module runs in its own process (tests/run_all.py).
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)

from kmodels import distribute, training  # noqa: E402
from kmodels.errors import UserError  # noqa: E402


class DistributeTest(absltest.TestCase):

  def test_mirrored_over_two_cpus_has_two_replicas(self):
    config = testutil.tiny_config(distribution__strategy="mirrored",
                                  distribution__devices="cpu:0,cpu:1")
    strategy = distribute.get_strategy(config.distribution)
    self.assertIsInstance(strategy, tf.distribute.MirroredStrategy)
    self.assertEqual(strategy.num_replicas_in_sync, 2)
    self.assertEqual(distribute.per_replica_batch_size(8, strategy), 4)

  def test_batch_not_divisible_by_replicas_says_what_to_use(self):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with self.assertRaisesRegex(UserError, "7 does not divide by the 2 replicas.*batch_size=6"):
      distribute.per_replica_batch_size(7, strategy)

  def test_one_device_and_default(self):
    config = testutil.tiny_config(distribution__strategy="one_device",
                                  distribution__devices="cpu:1")
    strategy = distribute.get_strategy(config.distribution)
    self.assertEqual(strategy.extended.worker_devices, ("/job:localhost/replica:0/task:0/device:CPU:1",))
    config.distribution.strategy = "default"
    self.assertIs(distribute.get_strategy(config.distribution), tf.distribute.get_strategy())

  def test_unknown_device_is_a_user_error(self):
    config = testutil.tiny_config(distribution__strategy="mirrored",
                                  distribution__devices="cpu:0,gpu:7")
    with self.assertRaisesRegex(UserError, "no device /gpu:7 on this machine.*CPU:1"):
      distribute.get_strategy(config.distribution)

  def test_fit_under_mirrored_trains_and_evaluates(self):
    config = testutil.tiny_config(dataset__source="synthetic", train__epochs=2,
                                  distribution__strategy="mirrored",
                                  distribution__devices="cpu:0,cpu:1")
    metrics = training.train_and_evaluate(config, self.create_tempdir().full_path)
    self.assertLen(metrics["history"], 2)
    self.assertLess(metrics["history"][1]["loss"], 50.0)
    self.assertBetween(metrics["test_accuracy"], 0.0, 1.0)


if __name__ == "__main__":
  absltest.main()
