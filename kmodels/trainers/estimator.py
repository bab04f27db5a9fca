"""The legacy path: canned tf.estimator classifiers, and Keras models moved into an Estimator.

Trainers:
  estimator        a canned classifier on one numeric feature column of the pixels:
                   `config.estimator.canned` dnn (DNNClassifier, hidden units from
                   `config.estimator.hidden_units`), linear (LinearClassifier) or
                   dnn_linear_combined (wide & deep: the linear and DNN parts both on it);
  keras_estimator  a registered Keras model through `tf.keras.estimator.model_to_estimator`.

Both read the same tfds pipelines as the Keras trainers (built inside each `input_fn`,
because an Estimator builds its own graph), train epoch by epoch, evaluate on the same
test split, and export a SavedModel for serving. Full lane only: TensorFlow removed
tf.estimator in 2.16. Nothing here touches tf.estimator at import time, so the current
lane imports this module and gets a clear error only when an estimator trainer is chosen.
"""

import functools
import tempfile

from absl import logging
import numpy as np
import tensorflow as tf

from kmodels import callbacks as kmodels_callbacks
from kmodels import checkpoints, data, distribute, faults, models, optimizers, serving
from kmodels.errors import UserError
from kmodels.trainers.run import Outcome

FEATURE = "image"  # the canned Estimators' feature key (Keras models use their input's name)
# config.estimator.canned -> the canned classifier trainer=estimator trains on the pixels
CANNED = {
    "dnn": "DNNClassifier",
    "linear": "LinearClassifier",
    "dnn_linear_combined": "DNNLinearCombinedClassifier"
}


def canned_label(config):
  """The canned Estimator's name for people, e.g. DNNClassifier[256]."""
  canned = config.estimator.canned
  hidden = list(config.estimator.hidden_units) if canned != "linear" else ""
  return f"{CANNED[canned]}{hidden}"


def check_available(trainer):
  """Raises a UserError on TensorFlow versions without tf.estimator (2.16 and later)."""
  if not hasattr(tf, "estimator"):
    raise UserError(
        f"trainer={trainer} needs tf.estimator, which TensorFlow removed in 2.16; this is "
        f"TensorFlow {tf.__version__}. Use the full lane (TF 2.15 with tensorflow-estimator):"
        " `bash launch/setup.sh`, then run with .venv/bin/python.")


def check_config(config):
  """What the Estimator paths support, checked before any work (called by validation)."""
  check_available(config.trainer)
  if config.xla:
    raise UserError(f"trainer={config.trainer} trains in float32 without XLA (Estimators "
                    "predate Keras mixed precision and jit_compile); set "
                    "--config.precision=float32 --config.xla=False.")
  if config.estimator.canned not in CANNED:
    raise UserError(f"estimator.canned={config.estimator.canned!r}: choose one of "
                    f"{', '.join(CANNED)}.")
  hidden = config.estimator.hidden_units
  if not hidden or not all(isinstance(h, int) and h > 0 for h in hidden):
    raise UserError(f"estimator.hidden_units must be positive layer sizes, e.g. (256,); "
                    f"got {hidden!r}.")


class _StepHook(tf.compat.v1.train.SessionRunHook):
  """Inside Estimator.train: the first-step timer, steps counted, progress, SIGTERM -> stop.

  After SIGTERM it asks the session to stop after the current step; the Estimator's
  checkpoint saver then writes that step as it closes (CheckpointSaverHook.end). Progress
  (callbacks.Progress, None off the chief) sees each step with the epoch's running mean
  loss: the training graph's scalar loss (the last scalar of its LOSSES collection, for
  canned heads and model_to_estimator alike); it has no accuracy to report.
  """

  def __init__(self, timer, sigterm, start_step, steps_per_epoch, progress=None):
    self.timer, self.sigterm, self.progress = timer, sigterm, progress
    self.steps_done, self.steps_per_epoch = start_step, steps_per_epoch
    self._loss, self._loss_sum, self._loss_count = None, 0.0, 0

  def begin(self):
    scalars = [
        t for t in tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.LOSSES) if t.shape.rank == 0
    ]
    self._loss = scalars[-1] if scalars and self.progress else None

  def before_run(self, run_context):
    return tf.compat.v1.train.SessionRunArgs(self._loss) if self._loss is not None else None

  def after_run(self, run_context, run_values):
    self.timer.step_done()
    self.steps_done += 1
    if self.progress is not None:
      logs = {}
      if self._loss is not None:
        self._loss_sum += float(run_values.results)
        self._loss_count += 1
        logs["loss"] = self._loss_sum / self._loss_count
      self.progress.on_train_batch_end((self.steps_done - 1) % self.steps_per_epoch, logs)
    if self.sigterm.stop_now():
      run_context.request_stop()


def _run_config(strategy, model_dir, steps_per_epoch, seed):
  distributed = strategy if strategy.num_replicas_in_sync > 1 else None
  return tf.estimator.RunConfig(
      # The Estimator's graph has its own seed; without it every run starts elsewhere.
      model_dir=model_dir,
      train_distribute=distributed,
      tf_random_seed=seed,
      save_checkpoints_steps=steps_per_epoch,
      keep_checkpoint_max=checkpoints.KEEP_CHECKPOINTS,
      log_step_count_steps=max(1, steps_per_epoch // 4))


def _optimizer(config, info):
  # Estimators take TF1-style optimizers: Keras' legacy classes, made inside their graph.
  optimizer_config = config.train.optimizer
  classes = {"adam": tf.keras.optimizers.legacy.Adam, "sgd": tf.keras.optimizers.legacy.SGD}
  kwargs = {
      "learning_rate":
          optimizers.learning_rate(  # the schedule too
              optimizer_config, optimizers.total_steps(config.train, info))
  }
  if optimizer_config.name == "sgd":
    kwargs["momentum"] = optimizer_config.momentum
  return lambda: classes[optimizer_config.name](**kwargs)


def _canned_classifier(config, info, run_config):
  """config.estimator.canned over one numeric column of the pixels; (estimator, key)."""
  logging.info("%s on a %s image feature, %d classes.", canned_label(config), info.image_shape,
               info.num_classes)
  column = tf.feature_column.numeric_column(FEATURE, shape=info.image_shape)
  common = dict(n_classes=info.num_classes, config=run_config)
  hidden = list(config.estimator.hidden_units)
  canned = config.estimator.canned
  if canned == "dnn":
    estimator = tf.estimator.DNNClassifier(hidden_units=hidden,
                                           feature_columns=[column],
                                           optimizer=_optimizer(config, info),
                                           **common)
  elif canned == "linear":
    estimator = tf.estimator.LinearClassifier([column],
                                              optimizer=_optimizer(config, info),
                                              **common)
  else:  # both parts read the pixels, each with the run's optimizer
    estimator = tf.estimator.DNNLinearCombinedClassifier(linear_feature_columns=[column],
                                                         linear_optimizer=_optimizer(config, info),
                                                         dnn_feature_columns=[column],
                                                         dnn_hidden_units=hidden,
                                                         dnn_optimizer=_optimizer(config, info),
                                                         **common)
  return estimator, FEATURE


def compiled_keras_model(config, info):
  """The registered Keras model of `config`, compiled as model_to_estimator needs it."""
  model = models.build_from_config(config.model, info.image_shape, info.num_classes)
  return models.compile_classifier(model, config.model.name, _optimizer(config, info)())


def keras_to_estimator(model, run_config):
  """A compiled Keras model as an Estimator; returns (estimator, its feature key).

  The conversion starts from the model's current weights. Afterwards the Keras model
  object itself is no longer usable in eager mode (model_to_estimator rebuilt it in a
  graph), so take anything needed from it first.
  """
  return (tf.keras.estimator.model_to_estimator(keras_model=model,
                                                config=run_config), model.input_names[0])


def _network_parameters(estimator):
  # A canned network's weights live under dnn/ and linear/; optimizer slots under training/.
  names = [n for n in estimator.get_variable_names() if n.startswith(("dnn/", "linear/"))]
  return int(sum(np.prod(estimator.get_variable_value(n).shape) for n in names))


def _input_fns(config, feature_key):

  def features(images, labels):
    return {feature_key: images}, labels

  def train_input_fn(start_step, input_context=None):
    # Under a strategy the Estimator passes an input_context and feeds one batch per
    # replica, so the pipeline batches per replica, as for the Keras trainers. Each
    # Estimator.train call (one per epoch) starts at its first step's batches, as the
    # pipeline of an unbroken run would be there.
    datasets = data.load(config.dataset, config.train.batch_size, config.train.seed)
    return datasets.make_train(input_context, start_step).map(features)

  def eval_input_fn():
    return data.load(config.dataset, config.train.batch_size, config.train.seed).eval.map(features)

  return train_input_fn, eval_input_fn


def _eval_logs(results):
  # Canned estimators report 'average_loss' (per example); Keras models 'loss'.
  loss = results.get("average_loss", results.get("loss"))
  return {"val_loss": float(loss), "val_accuracy": float(results["accuracy"])}


def _predicted_classes(estimator, eval_input_fn):
  classes = []
  for prediction in estimator.predict(eval_input_fn, yield_single_examples=False):
    if "class_ids" in prediction:  # canned estimator
      classes.append(prediction["class_ids"].reshape(-1))
    else:  # a Keras model: its output layer's scores
      classes.append(np.argmax(next(iter(prediction.values())), axis=-1))
  return np.concatenate(classes)


def _export(estimator, feature_key, run, card):
  """Exports the Estimator in the Keras exports' signatures, as the next version.

  The Estimator writes its TF1 SavedModel (one float32 `images` input, its own output
  names) to a scratch directory; a tf.Module then wraps its predict signature in
  serving.signatures, so every kmodels export serves the same inputs and outputs.
  """
  info = run.datasets.info

  def serving_input_fn():  # called by the export inside the Estimator's graph
    images = tf.compat.v1.placeholder(tf.float32, [None, *info.image_shape],
                                      name=serving.INPUT_NAME)
    return tf.estimator.export.ServingInputReceiver({feature_key: data.scale_pixels(images)},
                                                    {serving.INPUT_NAME: images})

  with tempfile.TemporaryDirectory(prefix="kmodels-estimator-export-") as scratch:
    estimator_export = estimator.export_saved_model(scratch, serving_input_fn).decode()
    wrapper = tf.Module()
    wrapper.estimator = tf.saved_model.load(estimator_export)
    # A canned Estimator's prediction signature is "predict" (its serving_default
    # classifies tf.Examples); model_to_estimator's is serving_default.
    signatures = wrapper.estimator.signatures
    predict = signatures.get("predict") or signatures["serving_default"]
    # A canned classifier's outputs include its logits; a Keras model's its output layer's.
    keras_inside = run.trainer.registry_model
    output, logits = ((next(iter(predict.structured_outputs)),
                       models.REGISTRY[run.config.model.name].logits) if keras_inside else
                      ("logits", True))
    with serving.new_version(run.workdir.export, run.strategy,
                             run.workdir.export_versioned) as slot:
      serving.export_module(wrapper,
                            lambda pixels: predict(images=pixels)[output],
                            info,
                            slot,
                            card,
                            logits,
                            warmup_images=run.datasets.first_eval_images(serving.WARMUP_IMAGES))
  return slot.path


def _train_epochs(run, estimator, train_input_fn, eval_input_fn, sigterm):
  """The epoch loop on the Keras trainers' epoch contract.

  run.callbacks (history, extra callbacks; TensorBoard replaced by epoch scalars, since
  Keras' callback wants a Keras model) see each epoch begin and end; a NaN loss stops the
  run with TrainingDiverged before the epoch is saved; SIGTERM checkpoints the step and
  stops with Preempted (exit 143). The Estimator's own summaries stay in its model_dir.

  Returns the last epoch's evaluation logs (the final weights'), or None if every epoch
  was trained before (a rerun of a finished run).
  """
  config, spe = run.config, run.steps_per_epoch
  steps_done = checkpoints.resume_step(run.workdir.checkpoints, spe, repair=False)
  contract = [c for c in run.callbacks if not isinstance(c, tf.keras.callbacks.TensorBoard)]
  progress = next((c for c in contract if isinstance(c, kmodels_callbacks.Progress)), None)
  callbacks = tf.keras.callbacks.CallbackList(
      [*contract, kmodels_callbacks.EpochScalars(run.workdir.tensorboard)])
  callbacks.on_train_begin()
  logs = None
  for epoch in range(steps_done // spe, config.train.epochs):
    callbacks.on_epoch_begin(epoch)
    hook = _StepHook(run.timer, sigterm, steps_done, spe, progress)
    try:
      estimator.train(functools.partial(train_input_fn, steps_done),
                      max_steps=(epoch + 1) * spe,
                      hooks=[hook])
    except tf.compat.v1.train.NanLossDuringTrainingError as e:
      checkpoints.discard_after(run.workdir.checkpoints, steps_done)  # the epoch's start
      raise faults.diverged(float("nan"), epoch, (hook.steps_done - 1) % spe, config) from e
    steps_done = hook.steps_done
    if sigterm.stop_now() and steps_done < (epoch + 1) * spe:
      raise faults.preempted(epoch, (steps_done - 1) % spe, spe)
    logs = _eval_logs(estimator.evaluate(eval_input_fn))
    callbacks.on_epoch_end(epoch, logs)
    if sigterm.stop_now():  # during the epoch's last step or its evaluation
      raise faults.preempted(epoch, spe - 1, spe)
  callbacks.on_train_end()
  return logs


def train(run):
  """Trains and evaluates with an Estimator, resuming from its checkpoints.

  Returns:
    An Outcome (no top-5 accuracy). Per-epoch evaluation goes to run.history, as for the
    Keras trainers. run.trainer.registry_model picks the network: the registry's Keras
    model through model_to_estimator, or the canned classifier of estimator.canned.
  """
  config, info = run.config, run.datasets.info
  check_available(config.trainer)
  run_config = _run_config(run.strategy, run.workdir.checkpoints, run.steps_per_epoch,
                           config.train.seed)
  if not run.trainer.registry_model:
    estimator, feature_key = _canned_classifier(config, info, run_config)
    parameters = None  # known once the network exists, after training
  else:
    model = compiled_keras_model(config, info)
    parameters = model.count_params()
    estimator, feature_key = keras_to_estimator(model, run_config)
  train_input_fn, eval_input_fn = _input_fns(config, feature_key)
  with faults.sigterm_flag(run.strategy) as sigterm:
    last_epoch = _train_epochs(run, estimator, train_input_fn, eval_input_fn, sigterm)
  final = last_epoch or _eval_logs(estimator.evaluate(eval_input_fn))
  classes = _predicted_classes(estimator, eval_input_fn)
  if distribute.is_chief(run.strategy):
    card = serving.Card.from_config(
        config, final["val_accuracy"],
        (config.model.name if run.trainer.registry_model else canned_label(config)))
    logging.info("Exported the Estimator in serving signatures to %s.",
                 _export(estimator, feature_key, run, card))
  return Outcome(final["val_loss"], final["val_accuracy"], classes, parameters or
                 _network_parameters(estimator))
