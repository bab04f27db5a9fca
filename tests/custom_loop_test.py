"""The custom_loop trainer: same outputs as fit, checkpoints that resume, loss scaling."""

import os

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil
import numpy as np
import tensorflow as tf

from kmodels import training
from kmodels.workdir import Workdir


def _config(**overrides):
  return testutil.tiny_config(dataset__source="synthetic", trainer="custom_loop", **overrides)


def _exported_weights(workdir):
  return tf.keras.models.load_model(testutil.export_of(workdir)).get_weights()


class CustomLoopTest(parameterized.TestCase):

  def test_writes_what_fit_writes(self):
    workdir = Workdir(self.create_tempdir().full_path)
    metrics = training.train_and_evaluate(_config(train__epochs=2), workdir.root)
    for path in (workdir.config_json, workdir.metrics, workdir.curves, workdir.report,
                 workdir.history, os.path.join(workdir.export, "1", "saved_model.pb")):
      self.assertTrue(os.path.exists(path), path)
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2])
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "seconds", "images"):
      self.assertIn(key, metrics["history"][0])
    self.assertGreater(metrics["images_per_second"], 0)
    self.assertTrue(os.listdir(os.path.join(workdir.tensorboard, "train")))

  def test_matches_fit_step_for_step(self):
    """Same seed and data: the hand-written loop must compute what model.fit computes."""
    fit_dir, loop_dir = self.create_tempdir().full_path, self.create_tempdir().full_path
    common = dict(model__name="mlp", train__steps_per_epoch=3)
    training.train_and_evaluate(testutil.tiny_config(dataset__source="synthetic", **common),
                                fit_dir)
    training.train_and_evaluate(_config(**common), loop_dir)
    for a, b in zip(_exported_weights(fit_dir), _exported_weights(loop_dir)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  def test_resumes_from_the_latest_checkpoint_and_keeps_the_best(self):
    workdir = Workdir(self.create_tempdir().full_path)
    config = _config(train__epochs=3)
    with self.assertRaises(KeyboardInterrupt):  # at the start of the third epoch
      training.train_and_evaluate(config, workdir.root, extra_callbacks=[testutil.CrashAtEpoch(2)])
    latest = tf.train.load_checkpoint(tf.train.latest_checkpoint(workdir.checkpoints))
    self.assertEqual(latest.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE"), 2)

    with self.assertLogs(level="INFO") as logs:
      metrics = training.train_and_evaluate(config, workdir.root)
    self.assertTrue(any("continuing at epoch 3" in line for line in logs.output))
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2, 3])
    best_epoch = 1 + int(np.argmin([h["val_loss"] for h in metrics["history"]]))
    best = tf.train.latest_checkpoint(os.path.join(workdir.checkpoints, "best"))
    self.assertEqual(int(best.rsplit("-", 1)[1]), best_epoch)

  def test_mixed_float16_unscales_what_it_scales(self):
    """One SGD run in float32 and one in float16 with loss scaling: the same weights.

    The loss is multiplied by 2**15 before the backward pass; were the gradients not
    divided by it again, the float16 run's steps would be 32768 times too large.
    """
    common = dict(model__name="mlp",
                  train__steps_per_epoch=3,
                  train__optimizer__name="sgd",
                  train__optimizer__learning_rate=0.05)
    float32_dir, float16_dir = self.create_tempdir().full_path, self.create_tempdir().full_path
    training.train_and_evaluate(_config(**common), float32_dir)
    metrics = training.train_and_evaluate(_config(precision="mixed_float16", **common), float16_dir)
    self.assertTrue(np.isfinite(metrics["test_loss"]))
    for a, b in zip(_exported_weights(float32_dir), _exported_weights(float16_dir)):
      np.testing.assert_allclose(a, b, atol=2e-3)

  def test_mixed_bfloat16_trains_with_float32_outputs(self):
    workdir = self.create_tempdir().full_path
    metrics = training.train_and_evaluate(_config(precision="mixed_bfloat16", xla=True), workdir)
    self.assertTrue(np.isfinite(metrics["history"][0]["loss"]))
    outputs = tf.keras.models.load_model(testutil.export_of(workdir))(np.zeros((2, 28, 28, 1)))
    self.assertEqual(outputs.dtype, tf.float32)


if __name__ == "__main__":
  absltest.main()
