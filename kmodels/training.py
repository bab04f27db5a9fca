"""Runs one experiment: set up, train with the configured trainer, evaluate, report, export.

The trainers of kmodels.trainers.TABLE share everything around the training loop:
  fit              Keras `model.fit` with BackupAndRestore (here);
  custom_loop      a GradientTape loop under `strategy.run` (kmodels/custom_loop.py);
  estimator        tf.estimator.DNNClassifier (kmodels/estimator.py);
  keras_estimator  a registered Keras model through model_to_estimator (same module).
"""

import json
import os
import sys
import typing

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from kmodels import (callbacks, checkpoints, custom_loop, data, distribute, estimator, faults,
                     models, optimizers, precision, preparation, reporting, serving, sources,
                     storage, trainers, validation)
from kmodels import errors
from kmodels.errors import PeerLost, TrainingDiverged, UserError
from kmodels import workdir as workdir_lib
from kmodels.workdir import Workdir


def build_and_compile(config, info, strategy):
  warn_about_xla_on_cpu(config, strategy)
  with strategy.scope():
    model = models.build_from_config(config.model, info.image_shape, info.num_classes)
    if config.train.sync_batchnorm:
      layers = models.synchronize_batchnorm(model)
      logging.info("train.sync_batchnorm: %d BatchNorm layers use the global batch's "
                   "statistics (all-reduced over %d replicas).", layers,
                   strategy.num_replicas_in_sync)
    optimizer = optimizers.build_optimizer(
        config.train.optimizer, optimizers.total_steps(config.train, info),
        config.train.batch_size, finetune_from_step=_finetune_from_step(config, info))
    models.compile_classifier(
        model, config.model.name, optimizer,
        num_classes=info.num_classes, label_smoothing=config.train.label_smoothing,
        steps_per_execution=config.train.steps_per_execution,
        # The custom loop compiles its own step; Keras' evaluate/predict stay as they are.
        jit_compile=config.xla and trainers.TABLE[config.trainer].jit_compile)
    if config.model.freeze_backbone_epochs:
      # Slots for every weight now, while all are trainable: the head-only epochs would
      # otherwise build the optimizer for the head alone (callbacks.FreezeBackbone).
      optimizers.build_variables(model.optimizer, model.trainable_variables)
  models.summary_model(model, info.image_shape).summary(print_fn=logging.info)
  return model


def _finetune_from_step(config, info):
  """The first step that trains the whole model after a frozen backbone, or None."""
  if not config.model.freeze_backbone_epochs:
    return None
  return config.model.freeze_backbone_epochs * optimizers.steps_per_epoch(config.train, info)


def _check_fit_xla(config, strategy):
  devices = distribute.replica_devices(strategy)
  several = strategy.num_replicas_in_sync > 1 and len(devices) > 1
  if config.xla and several and all("CPU" in d.upper() for d in devices):
    # Keras compiles its whole step per replica, but places every replica's XLA cluster on
    # CPU:0, which can't reach CPU:1's variables (xla/known_issues, "tf.Variable on a
    # different device"). GPUs and TPUs are not affected.
    raise UserError("xla=True with the fit trainer can't run over several CPU devices "
                    f"({', '.join(devices)}). Use --config.trainer=custom_loop (it pins each "
                    "replica's XLA cluster to its device) or --config.xla=False.")


def warn_about_xla_on_cpu(config, strategy):
  """XLA's CPU backend convolves without oneDNN: convolutional nets slow down a lot."""
  devices = distribute.replica_devices(strategy)
  if config.xla and all("CPU" in d.upper() for d in devices):
    logging.warning(
        "xla=True on CPUs: XLA compiles convolutions without oneDNN; MiniVGGNet trained "
        "10x and ResNet-50 at 224 5x slower with it than without (BUILD_NOTES \"Speed\" "
        "and \"ImageNet architectures\"). It pays off on GPUs and TPUs; on this machine "
        "use --config.xla=False.")


def fit(run):
  """The `fit` trainer: Keras model.fit, resumable at every epoch end and after SIGTERM."""
  _check_fit_xla(run.config, run.strategy)
  start_step = checkpoints.resume_step(
      storage.join(run.workdir.checkpoints, checkpoints.BACKUP_CHIEF), run.steps_per_epoch,
      repair=not distribute.is_multi_worker(run.strategy))
  freeze_epochs = run.config.model.freeze_backbone_epochs
  freezing = ([callbacks.FreezeBackbone(models.backbone_of(run.model), freeze_epochs)]
              if freeze_epochs else [])
  with faults.sigterm_flag(run.strategy) as sigterm:
    run.model.fit(run.datasets.distributed_train(run.strategy, start_step),
                  epochs=run.config.train.epochs, steps_per_epoch=run.steps_per_epoch,
                  validation_data=run.datasets.eval,
                  # Last: the others have seen the epoch end when it stops the run.
                  callbacks=[*freezing, *run.callbacks, checkpoints.PreemptibleBackup(
                      run.workdir.checkpoints, run.steps_per_epoch, sigterm,
                      run.config.train.checkpoint_every_steps, start_step)],
                  # A progress bar for people at a terminal; one line per epoch in logs.
                  verbose=1 if sys.stdout.isatty() else 2)


class Run(typing.NamedTuple):
  """Everything a trainer needs; built once by train_and_evaluate."""
  config: typing.Any
  workdir: Workdir
  strategy: tf.distribute.Strategy
  datasets: data.Datasets
  history: callbacks.EpochHistory
  steps_per_epoch: int
  timer: callbacks.FirstStepTimer
  # The epoch-end contract (callbacks.epoch_contract) plus any the caller added.
  callbacks: typing.Sequence[tf.keras.callbacks.Callback] = ()
  model: typing.Optional[tf.keras.Model] = None  # Keras trainers only


class Outcome(typing.NamedTuple):
  """What every trainer returns: test metrics, predicted test classes, model size."""
  test_loss: float
  test_accuracy: float
  predicted_classes: np.ndarray
  parameters: int
  test_top5_accuracy: typing.Optional[float] = None  # with models.TOP5_MIN_CLASSES classes


def _keras_trainer(train_fn):
  """Builds the model, runs `train_fn(run)`, then evaluates and exports, for Keras models."""

  def trainer(run):
    with precision.policy(run.config.precision):
      model = build_and_compile(run.config, run.datasets.info, run.strategy)
      train_fn(run._replace(model=model))
      results = model.evaluate(run.datasets.eval, verbose=0, return_dict=True)
      test_loss, test_accuracy = results["loss"], results["accuracy"]
      # argmax is the same on logits and on probabilities.
      classes = np.argmax(model.predict(run.datasets.eval, verbose=0), axis=-1)
      # Equal on every worker of a healthy multi-worker job; a quick check for users too.
      logging.info("Weights fingerprint (sum of |w|): %r", weights_fingerprint(model))
      with serving.new_version(run.workdir.export, run.strategy,
                                run.workdir.export_versioned) as slot:
        serving.export_keras(model, run.datasets.info, slot,
                             serving.Card.from_config(run.config, float(test_accuracy)),
                             logits=models.REGISTRY[run.config.model.name].logits,
                             warmup_images=run.datasets.first_eval_images(serving.WARMUP_IMAGES))
    top5 = results.get("top5_accuracy")
    return Outcome(float(test_loss), float(test_accuracy), classes, model.count_params(),
                   None if top5 is None else float(top5))

  return trainer


# The train functions of kmodels.trainers.TABLE: each takes a Run, returns an Outcome.
train_with_fit = _keras_trainer(fit)
train_with_custom_loop = _keras_trainer(custom_loop.train)


def train_with_estimator(run):
  return Outcome(*estimator.train(run))


def weights_fingerprint(model):
  return float(sum(np.abs(w.astype(np.float64)).sum() for w in model.get_weights()))


def _open(config, workdir, strategy, overwrite):
  """Validates, makes the strategy, and (on the chief) prepares and locks the workdir."""
  validation.validate(config)
  # The strategy comes first: MultiWorkerMirroredStrategy must exist before any TF op runs.
  strategy = strategy or distribute.get_strategy(
      config.distribution, for_estimator=trainers.is_estimator(config.trainer))
  config = with_resolved_precision(config, strategy)
  config = with_resolved_splits(config)
  workdir = Workdir(workdir, environ=os.environ)  # Vertex AI's AIP_* directories
  if distribute.is_chief(strategy):
    workdir.prepare(config, overwrite)
  return config, workdir, strategy


def with_resolved_precision(config, strategy=None):
  """A copy of `config` whose `precision` is what the run uses (`auto` resolved), with the
  requested value kept as `precision_requested` (config.json and metrics.json show both)."""
  resolved = config.copy_and_resolve_references()
  if "precision_requested" not in config:  # not resolved before (benchmark resolves too)
    with resolved.unlocked():
      resolved.precision_requested = config.precision
      resolved.precision = precision.resolve(config.precision, config.trainer)
  if strategy is not None:
    precision.agree_across_workers(resolved.precision, strategy)
  return resolved


def with_resolved_splits(config):
  """`config` with the dataset's evaluation split resolved (a held-out slice if it has none),
  so config.json records what the run trained and evaluated on."""
  if config.dataset.source == "tfds" and config.dataset.name != sources.IMAGE_FOLDER:
    preparation.ensure_prepared(config.dataset)
  dataset = sources.with_resolved_splits(config.dataset)
  if dataset is config.dataset:
    return config
  resolved = config.copy_and_resolve_references()
  resolved.dataset.train_split, resolved.dataset.eval_split = (dataset.train_split,
                                                               dataset.eval_split)
  return resolved


def seed_and_determinism(train_config):
  tf.keras.utils.set_random_seed(train_config.seed)
  if train_config.deterministic:
    tf.config.experimental.enable_op_determinism()  # for the rest of the process


def _load(config, strategy, datasets):
  per_replica = distribute.per_replica_batch_size(config.train.batch_size, strategy)
  seed_and_determinism(config.train)
  datasets = datasets or data.load(config.dataset, config.train.batch_size, config.train.seed)
  info = datasets.info
  steps_per_epoch = config.train.steps_per_epoch or info.train_examples // config.train.batch_size
  logging.info("%s: %d train / %d eval examples, %s images, %d classes. Batch %d "
               "(%d per replica x %d), %d steps per epoch, %d epochs, trainer %s.", info.name,
               info.train_examples, info.eval_examples, info.image_shape, info.num_classes,
               config.train.batch_size, per_replica, strategy.num_replicas_in_sync,
               steps_per_epoch, config.train.epochs, config.trainer)
  return datasets, steps_per_epoch


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *,
    strategy: typing.Optional[tf.distribute.Strategy] = None,
    datasets: typing.Optional[data.Datasets] = None, overwrite: bool = False,
    extra_callbacks: typing.Sequence[tf.keras.callbacks.Callback] = ()) -> dict:
  """Trains `config.model` on `config.dataset` and writes every output into `workdir`.

  Re-running with the same workdir resumes from the last completed epoch. In a
  multi-worker job every worker calls this; only the chief writes the workdir.

  Args:
    config: an experiment ConfigDict (see configs/base.py for every key).
    workdir: output directory; created if needed.
    strategy: a tf.distribute.Strategy; default: built from `config.distribution`.
    datasets: a `data.Datasets`; default: loaded from `config.dataset`.
    overwrite: if `workdir` holds a run of another experiment, delete its outputs
      (otherwise that is refused with a UserError).
    extra_callbacks: Keras callbacks the Keras trainers (fit and custom_loop alike) call
      after kmodels' own, e.g. to stop or inspect a run in a test.

  Returns:
    The metrics dict also written to workdir/metrics.json.
  """
  timer = callbacks.FirstStepTimer()
  config, workdir, strategy = _open(config, workdir, strategy, overwrite)
  try:
    datasets, steps_per_epoch = _load(config, strategy, datasets)
    return _train_evaluate_report(config, workdir, strategy, datasets, steps_per_epoch, timer,
                                  extra_callbacks)
  except (tf.errors.UnavailableError, tf.errors.AbortedError) as e:
    if not distribute.is_multi_worker(strategy):
      raise
    raise PeerLost(f"this job lost a worker ({_peer_failure(e)}). Restart the job's "
                   "tasks with the same command: they resume from the last checkpoint in "
                   f"{workdir.root}. Exit 129, which job controllers retry.") from e
  except (OSError, tf.errors.OpError) as e:
    if not faults.is_disk_full(e):
      raise
    raise faults.disk_full(workdir.root) from e
  finally:
    workdir.release()


def _peer_failure(error):
  """The line of a collective's error that names the task that failed."""
  lines = [line.strip() for line in str(error).splitlines() if "/job:" in line]
  return (lines[0] if lines else errors.first_line(error))[:300]


def _train_evaluate_report(config, workdir, strategy, datasets, steps_per_epoch, timer,
                           extra_callbacks):
  chief = distribute.is_chief(strategy)
  history = callbacks.EpochHistory(workdir.history if chief else None,
                                   steps_per_epoch * config.train.batch_size)
  run = Run(config, workdir, strategy, datasets, history, steps_per_epoch, timer)
  run = run._replace(callbacks=[*callbacks.epoch_contract(run), *extra_callbacks])
  try:
    outcome = trainers.TABLE[config.trainer].train(run)
  except TrainingDiverged as e:
    if chief:  # what was learned before the fault stays readable
      reporting.write_json(workdir.metrics, {
          "trainer": config.trainer, "status": "diverged", "error": str(e),
          "history": history.history, "epochs_completed": len(history.history)})
    raise
  except tf.errors.OpError as e:
    user_error = data.explain_read_error(e, config.dataset, datasets.info)
    if user_error is None:
      raise
    raise user_error from e
  labels = np.concatenate([y.numpy() for _, y in datasets.eval])
  report = reporting.classification_report(labels, outcome.predicted_classes,
                                           datasets.info.label_names)
  metrics = {
      "trainer": config.trainer,
      "precision": config.precision,
      "precision_requested": config.precision_requested,
      "status": "completed",
      "test_accuracy": outcome.test_accuracy,
      "test_loss": outcome.test_loss,
      **({"test_top5_accuracy": outcome.test_top5_accuracy}
         if outcome.test_top5_accuracy is not None else {}),
      "parameters": outcome.parameters,
      "history": history.history,
      "train_seconds": sum(h["seconds"] for h in history.history),
      "images_per_second": callbacks.steady_images_per_second(history.history),
      "epochs_completed": len(history.history),
      # From the start of the run (after imports) to the end of the first training step
      # of this process: setup, data, model building, tracing and compilation.
      "first_step_seconds": timer.seconds,
      "first_step_unix_time": timer.unix_time,
      # Image folders: files skipped as unreadable, per split (named in the log).
      "bad_files": datasets.info.bad_files or {},
  }
  if chief:
    _write_reports(config, workdir, datasets.info, metrics, report)
    reporting.plot_confusion_matrix(
        labels, outcome.predicted_classes, datasets.info.label_names, workdir.confusion,
        f"{serving.model_label(config)} on {datasets.info.name} ({config.dataset.eval_split})")
  return metrics


def _write_reports(config, workdir, info, metrics, report):
  reporting.write_json(workdir.metrics, metrics)
  reporting.write_hparams(
      storage.join(workdir.tensorboard, "hparams"),
      workdir_lib.run_defining_values(json.loads(config.to_json_best_effort())), metrics,
      step=len(metrics["history"]))
  storage.write_atomic(workdir.report, report)
  reporting.plot_curves(metrics["history"], workdir.curves,
                        f"{serving.model_label(config)} ({config.trainer}) on {info.name}")
  logging.info("Classification report (%s, split %r):\n%s", info.name,
               config.dataset.eval_split, report)
  logging.info("Test accuracy %.4f, test loss %.4f. Outputs in %s: metrics.json, curves.png, "
               "classification_report.txt, confusion_matrix.png, tensorboard/, checkpoints/; "
               "the SavedModel to serve: %s.", metrics["test_accuracy"], metrics["test_loss"],
               workdir.root, workdir.current_export())
