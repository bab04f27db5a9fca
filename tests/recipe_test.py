"""The training recipe's optimizer parts, each tested for its effect on the weights."""

import os

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tests import testutil
from kmodels import data, models, optimizers, training, validation
from kmodels.errors import UserError
from kmodels.tools import evaluation
from kmodels.trainers import custom_loop, keras

# Two CPU devices for the synchronized BatchNorm test (before TensorFlow starts its runtime).
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def _optimizer_config(**changes):
  config = testutil.tiny_config().train.optimizer
  config.update(changes)
  return config


def _model():
  tf.keras.utils.set_random_seed(0)
  model = tf.keras.Sequential(
      [tf.keras.Input((4,)),
       tf.keras.layers.Dense(3),
       tf.keras.layers.BatchNormalization()])
  model.layers[1].gamma.assign(tf.fill([3], 2.0))  # away from 1 and 0, so decay would show
  model.layers[1].beta.assign(tf.fill([3], 0.5))
  return model


def _step(optimizer, model, gradient_of):
  """One optimizer step with the given gradient per variable; returns (before, after)."""
  before = {v.name: v.numpy().copy() for v in model.trainable_variables}
  optimizer.apply_gradients([
      (tf.constant(gradient_of(v), tf.float32), v) for v in model.trainable_variables
  ])
  return before, {v.name: v.numpy() for v in model.trainable_variables}


def _exported_predictions(config, workdir):
  """(probabilities, labels) of the run's evaluation split, by its export (a fresh load)."""
  exported = tf.saved_model.load(testutil.export_of(workdir))
  datasets = data.load(config.dataset, config.train.batch_size, config.train.seed)
  probabilities, labels = [], []
  for images, batch_labels in datasets.eval:
    pixels = tf.cast(tf.round(images * 255), tf.uint8)
    probabilities.append(
        exported.signatures["serving_default"](images=pixels)["probabilities"].numpy())
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
        np.testing.assert_allclose(value, before[variable_name] * (1 - lr * decay), rtol=1e-6)
      else:  # bias, BatchNorm gamma and beta
        np.testing.assert_array_equal(value, before[variable_name], err_msg=variable_name)

  def test_weight_decay_everything_decays_biases_and_norm_scales_too(self):
    optimizer = optimizers.build_optimizer(
        _optimizer_config(name="sgd",
                          learning_rate=0.1,
                          weight_decay=0.5,
                          weight_decay_everything=True))
    before, after = _step(optimizer, _model(), lambda v: np.zeros(v.shape))
    for variable_name, value in after.items():
      np.testing.assert_allclose(value, before[variable_name] * 0.95, rtol=1e-6)

  def test_clipping_by_global_norm_caps_the_whole_step(self):
    gradient_of = lambda v: np.full(v.shape, 10.0)
    for clip, expected_norm in ((None, None), (1.0, 1.0)):
      optimizer = optimizers.build_optimizer(
          _optimizer_config(name="sgd", learning_rate=1.0, clip_global_norm=clip))
      before, after = _step(optimizer, _model(), gradient_of)
      step = np.sqrt(sum(np.sum((after[k] - before[k])**2) for k in after))
      if expected_norm is None:
        gradient_norm = np.sqrt(sum(10.0**2 * before[k].size for k in before))
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
    config = testutil.tiny_config(dataset__source="synthetic",
                                  trainer=trainer,
                                  model__name="mlp",
                                  train__label_smoothing=0.3)
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
    config = testutil.tiny_config(dataset__source="synthetic",
                                  dataset__name="cifar100",
                                  trainer=trainer,
                                  model__name="mlp")
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
    config.train.accumulate_steps = 2
    with self.assertRaisesRegex(
        UserError, "trainer=estimator trains with TF1 optimizers.* "
        "cannot apply train.accumulate_steps=2, "
        "train.optimizer.weight_decay=0.1. Unset them"):
      validation.validate(config)
    config = testutil.tiny_config(trainer="keras_estimator")
    config.dataset.augment.mixup_alpha = 0.2
    with self.assertRaisesRegex(
        UserError, "trainer=keras_estimator .*integer labels.* "
        "cannot apply dataset.augment.mixup_alpha=0.2"):
      validation.validate(config)


_STRATEGIES = {
    "default":
        tf.distribute.get_strategy,
    "one_device":
        lambda: tf.distribute.OneDeviceStrategy("/cpu:0"),
    # Without collective ops: instances of several strategies in one process reuse
    # collective instance keys, and SyncBatchNormTest's would meet these.
    "mirrored":
        lambda: tf.distribute.MirroredStrategy(
            ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()),
}
_IMAGE_SHAPE = (28, 28, 1)


def _train_weights(strategy, trainer, batch_size, accumulate_steps, images, labels):
  """The MLP's weights (no BatchNorm) before and after training on images/labels in order,
  batch by batch, with Adam on a cosine schedule and clipping; and its optimizer."""
  steps = len(images) // batch_size
  config = testutil.tiny_config(model__name="mlp",
                                trainer=trainer,
                                train__batch_size=batch_size,
                                train__steps_per_epoch=steps,
                                train__accumulate_steps=accumulate_steps)
  config.train.optimizer.update(schedule="cosine",
                                warmup_fraction=0.0,
                                learning_rate=0.01,
                                clip_global_norm=1.0)
  info = data.DatasetInfo("mnist", _IMAGE_SHAPE, 10, None, len(images), 8, None)
  tf.keras.utils.set_random_seed(0)
  model = keras.build_and_compile(config, info, strategy)
  batches = tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)
  initial = [w.numpy() for w in model.trainable_weights]
  if trainer == "fit":
    model.fit(batches, epochs=1, verbose=0)
  else:
    train_steps, _ = custom_loop.make_train_steps(model, strategy, config)
    train_steps(iter(strategy.experimental_distribute_dataset(batches)), tf.constant(steps))
  return initial, [w.numpy() for w in model.trainable_weights], model.optimizer


class AccumulationTest(parameterized.TestCase):

  @parameterized.product(strategy=tuple(_STRATEGIES), trainer=("fit", "custom_loop"))
  def test_n_steps_of_batch_b_update_as_one_step_of_batch_n_times_b(self, strategy, trainer):
    rng = np.random.default_rng(5)
    images = rng.uniform(size=(64, *_IMAGE_SHAPE)).astype(np.float32)
    labels = rng.integers(0, 10, size=64)
    initial, accumulated, optimizer = _train_weights(_STRATEGIES[strategy](), trainer, 8, 4, images,
                                                     labels)
    _, large, reference = _train_weights(_STRATEGIES[strategy](), trainer, 32, 1, images, labels)
    # 8 steps, 2 updates, and the schedule where the large batch's 2 steps left it.
    self.assertEqual(optimizer.iterations.numpy(), 2)
    self.assertEqual(reference.iterations.numpy(), 2)
    self.assertAlmostEqual(tf.keras.backend.get_value(optimizer.learning_rate),
                           tf.keras.backend.get_value(reference.learning_rate))
    for got, want, start in zip(accumulated, large, initial):
      # Float32 sums in another order; Adam divides by sqrt(v), which magnifies them where
      # a gradient is near 0. Steps are ~1e-2.
      np.testing.assert_allclose(got, want, atol=1e-5)
      self.assertGreater(np.abs(want - start).max(), 1e-3)  # the weights did move

  def test_an_accumulation_longer_than_the_run_is_refused(self):
    config = testutil.tiny_config(dataset__source="synthetic",
                                  model__name="mlp",
                                  train__accumulate_steps=3)  # 2 steps in all
    with self.assertRaisesRegex(UserError, "accumulate_steps=3 is more than the run's 2 "
                                "training steps"):
      training.train_and_evaluate(config, self.create_tempdir().full_path)

  def test_a_resume_with_another_accumulation_is_refused(self):
    config = testutil.tiny_config(dataset__source="synthetic",
                                  model__name="mlp",
                                  train__accumulate_steps=2)
    workdir = self.create_tempdir().full_path
    training.train_and_evaluate(config, workdir)
    config.train.accumulate_steps = 1
    config.train.epochs = 2
    with self.assertRaisesRegex(UserError, "train.accumulate_steps=2 steps .* cannot resume "
                                "with 1"):
      training.train_and_evaluate(config, workdir)


class _Trajectory(tf.keras.callbacks.Callback):
  """The trainable weights at the start, after every training step, and at the end."""

  def __init__(self):
    super().__init__()
    self.steps, self.start, self.end = [], None, None

  def _weights(self):
    return [v.numpy().copy() for v in self.model.trainable_variables]

  def on_train_begin(self, logs=None):
    self.start = self._weights()

  def on_train_batch_end(self, batch, logs=None):
    self.steps.append(self._weights())

  def on_train_end(self, logs=None):
    self.end = self._weights()


class MovingAverageTest(parameterized.TestCase):

  @parameterized.parameters("fit", "custom_loop")
  def test_the_model_ends_as_the_moving_average_and_is_evaluated_and_exported_so(self, trainer):
    momentum = 0.7
    config = testutil.tiny_config(dataset__source="synthetic",
                                  trainer=trainer,
                                  model__name="mlp",
                                  train__steps_per_epoch=4)
    config.train.optimizer.update(name="sgd", learning_rate=0.5, ema_momentum=momentum)
    trajectory = _Trajectory()
    workdir = self.create_tempdir().full_path
    metrics = training.train_and_evaluate(config, workdir, extra_callbacks=[trajectory])
    self.assertLen(trajectory.steps, 4)
    average = trajectory.start
    for weights in trajectory.steps:
      average = [momentum * a + (1 - momentum) * w for a, w in zip(average, weights)]
    for end, expected, last in zip(trajectory.end, average, trajectory.steps[-1]):
      np.testing.assert_allclose(end, expected, rtol=1e-5, atol=1e-6)
      self.assertGreater(np.abs(last - expected).max(), 1e-3)  # not the last step's weights
    # Evaluation and the export both saw the averaged weights.
    probabilities, labels = _exported_predictions(config, workdir)
    exported_loss = np.mean(-np.log(probabilities[np.arange(len(labels)), labels]))
    self.assertAlmostEqual(metrics["test_loss"], exported_loss, delta=1e-4)
    # So does launch.evaluate, from the last checkpoint (raw weights and their average).
    self.assertAlmostEqual(evaluation.evaluate(workdir)["loss"], metrics["test_loss"], delta=1e-4)


def _norm_model():
  model = tf.keras.Sequential(
      [tf.keras.Input((1,)), tf.keras.layers.BatchNormalization(momentum=0.0)])
  model.compile(tf.keras.optimizers.SGD(0.0), loss="mse")
  return model


class SyncBatchNormTest(absltest.TestCase):

  def test_statistics_come_from_the_global_batch_only_when_synchronized(self):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    # One global batch of 4: replica 0 gets the zeros, replica 1 the ones.
    batch = tf.data.Dataset.from_tensors(([[0.0], [0.0], [1.0], [1.0]], [[0.0]] * 4))
    variances = {}
    for synchronized in (False, True):
      with strategy.scope():
        model = _norm_model()
        if synchronized:
          self.assertEqual(models.synchronize_batchnorm(model), 1)
      model.fit(batch, epochs=1, verbose=0)
      variances[synchronized] = float(model.layers[0].moving_variance.numpy()[0])
    self.assertAlmostEqual(variances[True], 0.25, places=5)  # of [0, 0, 1, 1]
    self.assertAlmostEqual(variances[False], 0.0, places=5)  # each replica's own: 0

  def test_the_config_switch_synchronizes_every_batchnorm_layer(self):
    config = testutil.tiny_config(model__name="fastcnn", train__sync_batchnorm=True)
    info = data.load(testutil.tiny_config(dataset__source="synthetic").dataset, 8, 0).info
    model = keras.build_and_compile(config, info, tf.distribute.get_strategy())
    norms = [
        layer for layer in model.submodules if isinstance(layer, tf.keras.layers.BatchNormalization)
    ]
    self.assertNotEmpty(norms)
    self.assertTrue(all(layer.synchronized and not layer.fused for layer in norms))


class ScheduleLengthTest(absltest.TestCase):

  def _train(self, workdir, overwrite=False, **changes):
    config = testutil.tiny_config(dataset__source="synthetic", model__name="mlp", **changes)
    config.train.optimizer.schedule = "cosine"
    return training.train_and_evaluate(config, workdir, overwrite=overwrite)

  def test_a_resume_keeps_the_cosine_schedule_or_is_refused(self):
    workdir = self.create_tempdir().full_path
    self._train(workdir)
    checkpoints = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
    for change in ({"train__epochs": 2}, {"train__steps_per_epoch": 3}):
      with self.assertRaisesRegex(
          UserError, "cosine learning-rate schedule over "
          "train.epochs=1, train.steps_per_epoch=2.*--overwrite"):
        self._train(workdir, **change)
    # Nothing lost: the run's checkpoints and config are as they were.
    self.assertEqual(sorted(os.listdir(os.path.join(workdir, "checkpoints"))), checkpoints)
    self.assertEqual(
        testutil.read_json(os.path.join(workdir, "config.json"), {})["train"]["epochs"], 1)
    self.assertEqual(self._train(workdir)["epochs_completed"], 1)  # the same length resumes
    # A longer schedule from the start: --overwrite.
    self.assertEqual(self._train(workdir, overwrite=True, train__epochs=2)["epochs_completed"], 2)

  def test_constant_rates_may_train_longer(self):
    workdir = self.create_tempdir().full_path
    config = testutil.tiny_config(dataset__source="synthetic", model__name="mlp")
    training.train_and_evaluate(config, workdir)
    config.train.epochs = 2
    self.assertEqual(training.train_and_evaluate(config, workdir)["epochs_completed"], 2)


class FineTuningTest(absltest.TestCase):

  def test_the_finetune_schedule_drops_the_rate_at_the_thaw(self):
    config = _optimizer_config(name="sgd",
                               learning_rate=0.1,
                               schedule="cosine",
                               warmup_fraction=0.0,
                               finetune_lr_factor=0.1)
    schedule = optimizers.learning_rate(config, steps=10, finetune_from_step=4)
    cosine = optimizers.learning_rate(config, steps=10)
    for step in range(10):
      factor = 1.0 if step < 4 else 0.1
      self.assertAlmostEqual(float(schedule(step)), factor * float(cosine(step)), places=6)
    restored = tf.keras.optimizers.schedules.deserialize(
        tf.keras.optimizers.schedules.serialize(schedule))
    self.assertAlmostEqual(float(restored(5)), float(schedule(5)), places=6)

  def test_the_head_trains_first_with_the_backbone_and_its_batchnorm_frozen(self):
    config = testutil.tiny_config(dataset__source="synthetic",
                                  dataset__name="cifar10",
                                  model__name="mobilenet_v2",
                                  model__freeze_backbone_epochs=1,
                                  train__epochs=2)
    snapshots = []

    class Snapshot(tf.keras.callbacks.Callback):

      def on_train_begin(self, logs=None):
        self.on_epoch_end(-1)

      def on_epoch_end(self, epoch, logs=None):
        backbone = models.backbone_of(self.model)
        snapshots.append(([w.numpy().copy() for w in backbone.weights],
                          [w.numpy().copy() for w in self.model.get_layer("predictions").weights]))

    workdir = self.create_tempdir().full_path
    with self.assertLogs(level="INFO") as logs:
      training.train_and_evaluate(config, workdir, extra_callbacks=[Snapshot()])
    (start_backbone, start_head), (frozen_backbone, frozen_head), (end_backbone, _) = snapshots
    # Epoch 1: every backbone weight, BatchNorm's moving statistics included, unchanged.
    for before, after in zip(start_backbone, frozen_backbone):
      np.testing.assert_array_equal(before, after)
    self.assertGreater(max(np.abs(a - b).max() for a, b in zip(start_head, frozen_head)), 0)
    # Epoch 2: the whole model trains.
    changed = sum(not np.array_equal(a, b) for a, b in zip(frozen_backbone, end_backbone))
    self.assertGreater(changed, len(end_backbone) // 2)
    output = "\n".join(logs.output)
    self.assertIn("backbone frozen (BatchNorm in inference mode)", output)
    self.assertIn("Epoch 2: backbone thawed", output)

  def test_fine_tuning_settings_are_checked(self):
    for changes, message in ((dict(model__freeze_backbone_epochs=1), "has none"),
                             (dict(model__name="mobilenet_v2",
                                   model__freeze_backbone_epochs=1), "leaves no epoch"),
                             (dict(model__name="mobilenet_v2",
                                   model__freeze_backbone_epochs=1,
                                   train__epochs=2,
                                   trainer="custom_loop"), "needs trainer=fit"),
                             (dict(model__freeze_backbone_epochs=-1), "integer >= 0")):
      with self.assertRaisesRegex(UserError, message):
        validation.validate(testutil.tiny_config(**changes))


if __name__ == "__main__":
  absltest.main()
