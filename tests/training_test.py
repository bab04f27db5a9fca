"""The fit trainer end to end on tfds.testing.mock_data: outputs, resume, metrics."""

import json
import os

from absl.testing import absltest

from tests import testutil
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from kmodels import trainers, training
from kmodels.errors import UserError
from kmodels.trainers import keras
from kmodels.workdir import Workdir


class TrainAndEvaluateTest(absltest.TestCase):

  def test_mock_tfds_run_writes_every_output(self):
    workdir = Workdir(self.create_tempdir().full_path)
    config = testutil.tiny_config(train__epochs=2)
    with tfds.testing.mock_data(num_examples=20):
      metrics = training.train_and_evaluate(config, workdir.root)

    for path in (workdir.config_json, workdir.metrics, workdir.curves, workdir.report,
                 workdir.history):
      self.assertTrue(os.path.isfile(path), path)
    self.assertTrue(tf.io.gfile.glob(os.path.join(workdir.tensorboard, "*", "events.*")))
    self.assertTrue(tf.io.gfile.listdir(workdir.checkpoints))
    with open(workdir.config_json) as f:
      self.assertEqual(json.load(f)["model"]["name"], "shallownet")

    with open(workdir.metrics) as f:
      written = json.load(f)
    self.assertEqual(written, json.loads(json.dumps(metrics)))
    for key in ("test_accuracy", "test_loss", "history", "train_seconds", "images_per_second"):
      self.assertIn(key, written)
    self.assertEqual([h["epoch"] for h in written["history"]], [1, 2])
    self.assertBetween(written["test_accuracy"], 0.0, 1.0)
    self.assertGreater(written["images_per_second"], 0)
    self.assertEqual(written["history"][0]["images"], 2 * 8)
    peaks = [h["peak_rss_mb"] for h in written["history"]]
    self.assertGreater(peaks[0], 0)
    self.assertLessEqual(peaks[0], peaks[1])  # the process's peak so far

    with open(workdir.report) as f:
      report = f.read()
    self.assertIn("precision", report)
    self.assertRegex(report, r"accuracy\s+[\d.]+\s+20\n")  # the whole mock test split

    # The export serves uint8 images with named outputs (tests/serving_test.py: more).
    exported = tf.saved_model.load(workdir.current_export())
    images = np.random.randint(0, 256, size=(3, 28, 28, 1)).astype("uint8")
    outputs = exported.signatures["serving_default"](images=tf.constant(images))
    self.assertEqual(outputs["probabilities"].shape, (3, 10))
    self.assertEqual(outputs["class_name"].shape, (3,))

  def test_interrupted_run_resumes_at_the_next_epoch(self):
    workdir = Workdir(self.create_tempdir().full_path)
    config = testutil.tiny_config(dataset__source="synthetic", train__epochs=4)
    with self.assertRaises(KeyboardInterrupt):
      training.train_and_evaluate(config, workdir.root, extra_callbacks=[testutil.CrashAtEpoch(2)])
    with open(workdir.history) as f:
      self.assertEqual([h["epoch"] for h in json.load(f)], [1, 2])

    with self.assertLogs(level="INFO") as logs:
      metrics = training.train_and_evaluate(config, workdir.root)
    self.assertTrue(any("continuing at epoch 3" in line for line in logs.output))
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2, 3, 4])
    self.assertEqual([h["includes_compile"] for h in metrics["history"]],
                     [True, False, True, False])

  def test_rerunning_a_finished_run_does_not_train_again(self):
    workdir = Workdir(self.create_tempdir().full_path)
    config = testutil.tiny_config(dataset__source="synthetic", train__epochs=2)
    first = training.train_and_evaluate(config, workdir.root)
    second = training.train_and_evaluate(config, workdir.root)
    self.assertEqual(second["history"], first["history"])
    self.assertAlmostEqual(second["test_accuracy"], first["test_accuracy"], places=6)

  def test_loss_reads_logits_exactly_for_logits_models(self):
    info = training.data.DatasetInfo("mnist", (28, 28, 1), 10, list("0123456789"), 16, 8)
    strategy = tf.distribute.get_strategy()
    for name, logits in (("cnnblocks", True), ("resnet_like", True), ("mlp", False)):
      config = testutil.tiny_config(model__name=name)
      with self.assertLogs(level="INFO") as logs:
        model = keras.build_and_compile(config, info, strategy)
      self.assertEqual(model.loss.get_config()["from_logits"], logits, name)
      self.assertFalse(any("multiple" in line for line in logs.output))  # summary has shapes

  def test_fit_with_xla_compiles_the_train_step(self):
    config = testutil.tiny_config(dataset__source="synthetic", xla=True)
    info = training.data.DatasetInfo("mnist", (28, 28, 1), 10, list("0123456789"), 16, 8)
    fit = trainers.TABLE["fit"]
    self.assertTrue(
        keras.build_and_compile(config, info, tf.distribute.get_strategy(),
                                fit.jit_compile).jit_compile)
    metrics = training.train_and_evaluate(config, self.create_tempdir().full_path)
    self.assertTrue(np.isfinite(metrics["history"][0]["loss"]))

  def test_fit_under_mixed_float16_scales_the_loss_itself(self):
    config = testutil.tiny_config(dataset__source="synthetic", precision="mixed_float16")
    info = training.data.DatasetInfo("mnist", (28, 28, 1), 10, list("0123456789"), 16, 8)
    with self.assertLogs(level="WARNING") as logs:  # this machine has no GPU
      with training.precision.policy("mixed_float16"):
        model = keras.build_and_compile(config, info, tf.distribute.get_strategy())
    self.assertIn("--config.precision=mixed_bfloat16", logs.output[0])
    self.assertIsInstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    metrics = training.train_and_evaluate(config, self.create_tempdir().full_path)
    self.assertTrue(np.isfinite(metrics["test_loss"]))

  def test_logits_model_trains_end_to_end(self):
    config = testutil.tiny_config(dataset__source="synthetic", model__name="cnnblocks")
    metrics = training.train_and_evaluate(config, self.create_tempdir().full_path)
    self.assertTrue(np.isfinite(metrics["test_loss"]))
    self.assertBetween(metrics["test_accuracy"], 0.0, 1.0)

  def test_unwritable_workdir_is_a_user_error(self):
    parent = self.create_tempdir().full_path
    blocker = os.path.join(parent, "a_file")
    open(blocker, "w").close()
    with self.assertRaisesRegex(UserError, "Cannot write to workdir.*--workdir"):
      training.train_and_evaluate(testutil.tiny_config(dataset__source="synthetic"),
                                  os.path.join(blocker, "run"))

  def test_invalid_config_fails_before_touching_the_workdir(self):
    workdir = os.path.join(self.create_tempdir().full_path, "run")
    with self.assertRaisesRegex(UserError, "train.epochs must be a positive integer"):
      training.train_and_evaluate(testutil.tiny_config(train__epochs=0), workdir)
    self.assertFalse(os.path.exists(workdir))


if __name__ == "__main__":
  absltest.main()
