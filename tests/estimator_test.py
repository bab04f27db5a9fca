"""The legacy Estimator paths (full lane) and their clear refusal on the current lane."""

import os

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

# Two logical CPUs for the MirroredStrategy case, before TensorFlow starts its devices.
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

from kmodels import checkpoints, data, training, validation  # noqa: E402
from kmodels.errors import TrainingDiverged, UserError  # noqa: E402
from kmodels.tools import compare  # noqa: E402
from kmodels.trainers import estimator  # noqa: E402
from kmodels.workdir import Workdir  # noqa: E402

HAS_ESTIMATOR = testutil.HAS_ESTIMATOR
full_lane_only = absltest.skipUnless(HAS_ESTIMATOR, "tf.estimator exists only in TF <= 2.15")


def _config(**overrides):
  return testutil.tiny_config(trainer="estimator", model__name="mlp", **overrides)


class _EpochEnds(tf.keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.ends = []

  def on_epoch_end(self, epoch, logs=None):
    self.ends.append((epoch, dict(logs)))


def _scalar_tags(logdir):
  return {
      value.tag
      for path in tf.io.gfile.glob(os.path.join(logdir, "events.*"))
      for event in tf.compat.v1.train.summary_iterator(path)
      for value in event.summary.value
  }


class EstimatorTest(parameterized.TestCase):

  @full_lane_only
  def test_a_nan_loss_stops_the_run_before_anything_of_the_epoch_is_saved(self):
    workdir = Workdir(self.create_tempdir().full_path)
    config = _config(dataset__source="synthetic",
                     train__epochs=2,
                     train__optimizer__name="sgd",
                     train__optimizer__learning_rate=1e30)
    with self.assertRaisesRegex(
        TrainingDiverged, r"loss became nan at epoch 1, step \d+\. "
        r"Likely causes: a learning rate too high"):
      training.train_and_evaluate(config, workdir.root)
    self.assertEqual(testutil.read_json(workdir.metrics, {})["status"], "diverged")
    # The Estimator's first checkpoint (step 0) is the newest: nothing trained was kept.
    self.assertEqual(checkpoints.resume_step(workdir.checkpoints, 10), 0)

  @full_lane_only
  def test_dnn_classifier_on_mock_tfds_trains_evaluates_exports_and_serves(self):
    workdir = Workdir(self.create_tempdir().full_path)
    seen = _EpochEnds()
    with tfds.testing.mock_data(num_examples=48):
      metrics = training.train_and_evaluate(_config(train__epochs=2),
                                            workdir.root,
                                            extra_callbacks=[seen])
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2])
    # The epoch contract: extra callbacks see each epoch's evaluation, and TensorBoard
    # gets it under Keras' names.
    self.assertEqual([epoch for epoch, _ in seen.ends], [0, 1])
    self.assertEqual([logs["val_loss"] for _, logs in seen.ends],
                     [h["val_loss"] for h in metrics["history"]])
    self.assertEqual(_scalar_tags(os.path.join(workdir.tensorboard, "validation")),
                     {"epoch_loss", "epoch_accuracy"})
    self.assertEqual(metrics["parameters"], 28 * 28 * 256 + 256 + 256 * 10 + 10)
    self.assertBetween(metrics["test_accuracy"], 0.0, 1.0)
    for path in (workdir.metrics, workdir.curves, workdir.report, workdir.history):
      self.assertTrue(os.path.exists(path), path)
    self.assertTrue(tf.train.latest_checkpoint(workdir.checkpoints))
    # The Estimator's export wrapped in the Keras exports' signatures, as version 1.
    served = tf.saved_model.load(os.path.join(workdir.export, "1"))
    outputs = served.signatures["serving_default"](images=tf.zeros([3, 28, 28, 1], tf.uint8))
    self.assertEqual(outputs["probabilities"].shape, (3, 10))
    self.assertEqual(outputs["class_name"].dtype, tf.string)
    png = tf.io.encode_png(tf.zeros([28, 28, 1], tf.uint8))
    np.testing.assert_allclose(
        served.signatures["serving_bytes"](images=tf.stack([png] * 3))["probabilities"],
        outputs["probabilities"],
        atol=1e-6)
    card = testutil.read_json(os.path.join(workdir.export, "1", "model_card.json"), None)
    self.assertEqual(card["test_accuracy"], metrics["test_accuracy"])

  @full_lane_only
  def test_rerun_resumes_from_the_estimators_checkpoints(self):
    workdir = self.create_tempdir().full_path
    config = _config(dataset__source="synthetic", train__epochs=1)
    training.train_and_evaluate(config, workdir)
    config.train.epochs = 2
    with self.assertLogs(level="INFO") as logs:
      metrics = training.train_and_evaluate(config, workdir)
    self.assertTrue(any("continuing at epoch 2" in line for line in logs.output))
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2])

  @full_lane_only
  def test_same_seed_same_dnn_classifier(self):
    config = _config(dataset__source="synthetic")
    first = training.train_and_evaluate(config, self.create_tempdir().full_path)
    second = training.train_and_evaluate(config, self.create_tempdir().full_path)
    self.assertEqual(first["test_loss"], second["test_loss"])

  @full_lane_only
  def test_dnn_classifier_under_mirrored_over_two_cpus(self):
    config = _config(dataset__source="synthetic",
                     distribution__strategy="mirrored",
                     distribution__devices="cpu:0,cpu:1")
    metrics = training.train_and_evaluate(config, self.create_tempdir().full_path)
    self.assertTrue(np.isfinite(metrics["test_loss"]))

  @full_lane_only
  @parameterized.parameters("mlp", "cifar_cnn_sequential")
  def test_model_to_estimator_predicts_what_the_keras_model_predicts(self, name):
    config = testutil.tiny_config(model__name=name,
                                  dataset__source="synthetic",
                                  trainer="keras_estimator")
    info = data.load(config.dataset, 8, 0).info
    run_config = tf.estimator.RunConfig(model_dir=self.create_tempdir().full_path)
    images = np.random.default_rng(0).random((6, *info.image_shape), np.float32)
    model = estimator.compiled_keras_model(config, info)
    expected = model.predict(images, verbose=0)
    converted, key = estimator.keras_to_estimator(model, run_config)
    predictions = converted.predict(lambda: tf.data.Dataset.from_tensor_slices({
        key: images
    }).batch(3),
                                    yield_single_examples=False)
    actual = np.concatenate([next(iter(p.values())) for p in predictions])
    np.testing.assert_allclose(actual, expected, atol=1e-6)

  @full_lane_only
  def test_keras_estimator_trainer_runs_end_to_end(self):
    metrics = training.train_and_evaluate(
        testutil.tiny_config(trainer="keras_estimator",
                             model__name="cifar_cnn_sequential",
                             dataset__source="synthetic",
                             dataset__name="cifar10"),
        self.create_tempdir().full_path)
    self.assertEqual(metrics["parameters"], 109_834)

  @parameterized.parameters(
      (dict(precision="mixed_bfloat16"), "trains with precision auto or float32"),
      (dict(estimator__hidden_units=()), "estimator.hidden_units must be positive"),
      (dict(distribution__strategy="tpu"), "runs with distribution.strategy"),
  )
  @full_lane_only
  def test_unsupported_settings_are_refused(self, overrides, message):
    with self.assertRaisesRegex(UserError, message):
      validation.validate(_config(**overrides))

  @absltest.skipIf(HAS_ESTIMATOR, "the current lane's behaviour")
  def test_current_lane_says_where_estimator_went(self):
    with self.assertRaisesRegex(UserError, "removed in 2.16.*full lane"):
      validation.validate(_config())
    proc = testutil.call_launcher("train", "--config=configs/base.py",
                                  f"--workdir={self.create_tempdir().full_path}",
                                  "--config.trainer=estimator", "--config.dataset.source=synthetic")
    testutil.assert_user_error(self, proc, "removed in 2.16")


# The canned Estimators' rows, each migrated; the DNNClassifier's trainer and its migration
# are tested on their own above and in migration_test (MigrateKmodelsRunTest).
_COMPARED = ("sequential", "estimator_linear", "estimator_wide_deep", "estimator_linear_migrated",
             "estimator_wide_deep_migrated")


class CompareTest(absltest.TestCase):

  def test_compare_writes_table_csv_and_chart(self):
    workdir = self.create_tempdir().full_path
    proc = testutil.call_launcher("compare", "--config=configs/compare_fashion_mnist.py",
                                  f"--workdir={workdir}", "--config.dataset.source=synthetic",
                                  "--config.train.batch_size=16",
                                  "--config.train.steps_per_epoch=2", "--config.train.epochs=1",
                                  f"--config.compare.paths={','.join(_COMPARED)}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    for name in ("comparison.md", "comparison.csv", "comparison.png"):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    table = testutil.read_text(os.path.join(workdir, "comparison.md"))
    self.assertIn("| path | trainer |", proc.stdout)
    rows = {
        line.split("|")[1].strip(): line.split("|")[1:-1]
        for line in table.splitlines()
        if line.startswith("| ") and not line.startswith("| path")
    }
    self.assertEqual(list(rows), list(_COMPARED))
    self.assertEqual(rows["sequential"][-1].strip(), "ok")
    for path in _COMPARED[1:]:
      self.assertEqual(
          rows[path][-1].strip(),
          "ok" if HAS_ESTIMATOR else "skipped: tf.estimator needs the full lane (TF 2.15)", path)
    if HAS_ESTIMATOR:  # each migrated Estimator keeps its accuracy; both predict speeds shown
      self.assertEqual(rows["estimator_wide_deep"][2].strip(), "DNNLinearCombinedClassifier[256]")
      column = {name: i for i, name in enumerate(compare.COLUMNS)}
      for trained in ("estimator_linear", "estimator_wide_deep"):
        migrated = rows[f"{trained}_migrated"]
        self.assertEqual(rows[trained][column["test_accuracy"]], migrated[column["test_accuracy"]],
                         trained)
        for row in (rows[trained], migrated):
          self.assertNotEqual(row[column["predict_images_per_second"]].strip(), "—")

  def test_unknown_path_is_a_user_error(self):
    proc = testutil.call_launcher("compare", "--config=configs/compare_fashion_mnist.py",
                                  f"--workdir={self.create_tempdir().full_path}",
                                  "--config.compare.paths=sequential,jax")
    testutil.assert_user_error(self, proc, "unknown jax")


if __name__ == "__main__":
  absltest.main()
