"""Runs one experiment: set up, train with the configured trainer, evaluate, report.

The orchestrator: `prepare` validates the config, makes the strategy, resolves its `auto`
values and opens the data (launch.benchmark starts there too); then the workdir is
prepared and locked, and train_and_evaluate hands a trainers.run.Run to the
trainer's row of kmodels.trainers.TABLE (which trains, evaluates and exports) and writes
the reports from the Outcome it returns.
"""

import json
import os
import typing

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from kmodels import (callbacks, data, distribute, faults, precision, reporting, storage, trainers,
                     validation)
from kmodels import errors
from kmodels import workdir as workdir_lib
from kmodels.data import images, sources
from kmodels.errors import PeerLost, TrainingDiverged
from kmodels.trainers.run import Run
from kmodels.workdir import Workdir


class Prepared(typing.NamedTuple):
  """A run ready to train: what training and the benchmark both start from."""
  config: ml_collections.ConfigDict  # resolved: precision, evaluation split, crop policy
  strategy: tf.distribute.Strategy
  datasets: data.Datasets
  steps_per_epoch: int


def prepare(config: ml_collections.ConfigDict,
            strategy: typing.Optional[tf.distribute.Strategy] = None,
            datasets: typing.Optional[data.Datasets] = None) -> Prepared:
  """Validates `config`, makes the strategy, resolves its `auto` values and opens its data.

  The one path from a config to a run ready to train: train_and_evaluate and
  launch.benchmark both start here, so the benchmark measures what training runs. The
  data source is opened once; the returned config records what the run uses (precision,
  the evaluation split a dataset without `test` gets, the crop policy). `datasets`, when
  given (tests), are used as they are.
  """
  validation.validate(config)
  # The strategy comes first: MultiWorkerMirroredStrategy must exist before any TF op runs.
  strategy = strategy or distribute.get_strategy(
      config.distribution, for_estimator=trainers.is_estimator(config.trainer))
  config = with_resolved_crop_policy(with_resolved_precision(config, strategy))
  seed_and_determinism(config.train)
  if datasets is None:
    source = sources.open_source(config.dataset, config.train.seed)
    config = _with_splits_of(config, source.dataset_config)
    datasets = data.load(config.dataset, config.train.batch_size, config.train.seed, source)
  steps_per_epoch = _steps_per_epoch(config, strategy, datasets.info)
  return Prepared(config, strategy, datasets, steps_per_epoch)


def with_resolved_precision(config, strategy=None):
  """A copy of `config` whose `precision` is what the run uses (`auto` resolved), with the
  requested value kept as `precision_requested` (config.json and metrics.json show both)."""
  resolved = config.copy_and_resolve_references()
  if "precision_requested" not in config:  # not resolved before (benchmark resolves too)
    with resolved.unlocked():
      resolved.precision_requested = config.precision
      resolved.precision = precision.resolve(config.precision, trainers.TABLE[config.trainer])
  if strategy is not None:
    precision.agree_across_workers(resolved.precision, strategy)
  return resolved


def _with_splits_of(config, dataset_config):
  """`config` with the splits its opened source read (sources.with_resolved_splits)."""
  if (dataset_config.train_split, dataset_config.eval_split) == (config.dataset.train_split,
                                                                 config.dataset.eval_split):
    return config
  resolved = config.copy_and_resolve_references()
  resolved.dataset.train_split = dataset_config.train_split
  resolved.dataset.eval_split = dataset_config.eval_split
  return resolved


def with_resolved_crop_policy(config):
  """`config` with dataset.crop.policy=auto resolved (logged with its reason), for images
  converted one by one (dataset.image_size set); config.json records the policy used."""
  if config.dataset.crop.policy != "auto" or not config.dataset.image_size:
    return config
  resolved = config.copy_and_resolve_references()
  size, epochs = config.dataset.image_size, config.train.epochs
  policy = images.crop_policy(config.dataset, epochs)
  resolved.dataset.crop.policy = policy
  if policy == "imagenet":
    logging.info(
        "dataset.crop.policy=auto -> imagenet: images at %d px over %d epochs (the "
        "ImageNet recipe from %d px and %d epochs): random-resized crops and flips "
        "for training, the centre %g for evaluation.", size, epochs,
        images.IMAGENET_POLICY_MIN_SIZE, images.IMAGENET_POLICY_MIN_EPOCHS,
        config.dataset.crop.eval_fraction)
  else:
    logging.info(
        "dataset.crop.policy=auto -> %s: images at %d px over %d epochs (the "
        "ImageNet recipe needs %d px and %d epochs): the whole image resized for "
        "training and evaluation alike, no flips, as Keras' "
        "image_dataset_from_directory (ImageNet's crops lose short runs and small "
        "images to it, and flips mirror digits).", policy, size, epochs,
        images.IMAGENET_POLICY_MIN_SIZE, images.IMAGENET_POLICY_MIN_EPOCHS)
  return resolved


def seed_and_determinism(train_config):
  tf.keras.utils.set_random_seed(train_config.seed)
  if train_config.deterministic:
    tf.config.experimental.enable_op_determinism()  # for the rest of the process


def _steps_per_epoch(config, strategy, info):
  steps_per_epoch = config.train.steps_per_epoch or info.train_examples // config.train.batch_size
  per_replica = distribute.per_replica_batch_size(config.train.batch_size, strategy)
  logging.info(
      "%s: %d train / %d eval examples, %s images, %d classes. Batch %d "
      "(%d per replica x %d), %d steps per epoch, %d epochs, trainer %s.", info.name,
      info.train_examples, info.eval_examples, info.image_shape, info.num_classes,
      config.train.batch_size, per_replica, strategy.num_replicas_in_sync, steps_per_epoch,
      config.train.epochs, config.trainer)
  return steps_per_epoch


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    strategy: typing.Optional[tf.distribute.Strategy] = None,
    datasets: typing.Optional[data.Datasets] = None,
    overwrite: bool = False,
    extra_callbacks: typing.Sequence[tf.keras.callbacks.Callback] = ()
) -> dict:
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
  prepared = prepare(config, strategy, datasets)
  strategy = prepared.strategy
  workdir = Workdir(workdir, environ=os.environ)  # Vertex AI's AIP_* directories
  if distribute.is_chief(strategy):
    workdir.prepare(prepared.config, overwrite)
  try:
    return _train_evaluate_report(prepared, workdir, timer, extra_callbacks)
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


def _train_evaluate_report(prepared, workdir, timer, extra_callbacks):
  config, strategy, datasets, steps_per_epoch = prepared
  chief = distribute.is_chief(strategy)
  history = callbacks.EpochHistory(workdir.history if chief else None,
                                   steps_per_epoch * config.train.batch_size)
  trainer = trainers.TABLE[config.trainer]
  run = Run(config, workdir, strategy, datasets, history, steps_per_epoch, timer, trainer=trainer)
  run = run._replace(callbacks=[*callbacks.epoch_contract(run), *extra_callbacks])
  try:
    outcome = trainer.train(run)
  except TrainingDiverged as e:
    if chief:  # what was learned before the fault stays readable
      reporting.write_json(
          workdir.metrics, {
              "trainer": config.trainer,
              "status": "diverged",
              "error": str(e),
              "history": history.history,
              "epochs_completed": len(history.history)
          })
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
      "trainer":
          config.trainer,
      "precision":
          config.precision,
      "precision_requested":
          config.precision_requested,
      "status":
          "completed",
      "test_accuracy":
          outcome.test_accuracy,
      "test_loss":
          outcome.test_loss,
      **({
          "test_top5_accuracy": outcome.test_top5_accuracy
      } if outcome.test_top5_accuracy is not None else {}),
      "parameters":
          outcome.parameters,
      "history":
          history.history,
      "train_seconds":
          sum(h["seconds"] for h in history.history),
      "images_per_second":
          callbacks.steady_images_per_second(history.history),
      "epochs_completed":
          len(history.history),
      # From the start of the run (after imports) to the end of the first training step
      # of this process: setup, data, model building, tracing and compilation.
      "first_step_seconds":
          timer.seconds,
      "first_step_unix_time":
          timer.unix_time,
      # Image folders: files skipped as unreadable, per split (named in the log).
      "bad_files":
          datasets.info.bad_files or {},
  }
  if chief:
    _write_reports(config, workdir, datasets.info, metrics, report)
    reporting.plot_confusion_matrix(
        labels, outcome.predicted_classes, datasets.info.label_names, workdir.confusion,
        f"{trainers.model_label(config)} on {datasets.info.name} ({config.dataset.eval_split})")
  return metrics


def _write_reports(config, workdir, info, metrics, report):
  reporting.write_json(workdir.metrics, metrics)
  reporting.write_hparams(storage.join(workdir.tensorboard, "hparams"),
                          workdir_lib.run_defining_values(json.loads(config.to_json_best_effort())),
                          metrics,
                          step=len(metrics["history"]))
  storage.write_atomic(workdir.report, report)
  reporting.plot_curves(metrics["history"], workdir.curves,
                        f"{trainers.model_label(config)} ({config.trainer}) on {info.name}")
  logging.info("Classification report (%s, split %r):\n%s", info.name, config.dataset.eval_split,
               report)
  logging.info(
      "Test accuracy %.4f, test loss %.4f. Outputs in %s: metrics.json, curves.png, "
      "classification_report.txt, confusion_matrix.png, tensorboard/, checkpoints/; "
      "the SavedModel to serve: %s.", metrics["test_accuracy"], metrics["test_loss"], workdir.root,
      workdir.current_export())
