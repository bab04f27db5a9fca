"""Re-evaluates a finished or interrupted run on any split, from any of its checkpoints.

The model is rebuilt from the run's config.json and restored from a checkpoint: the
newest one (`latest`), the custom loop's lowest-validation-loss one (`best`), or a path.
Outputs go to WORKDIR/evaluation/<split>/: metrics.json, classification_report.txt and
confusion_matrix.png.
"""

from typing import Optional

from absl import logging
import ml_collections
import numpy as np
import tensorflow as tf

from configs import base
from kmodels import (checkpoints, data, models, optimizers, precision, progress, reporting, storage,
                     trainers)
from kmodels.errors import UserError, first_line
from kmodels.trainers import keras as keras_trainer
from kmodels.workdir import Workdir

CHECKPOINTS = ("latest", "best")

# What a run recorded before a key existed did, where that is not the key's default today.
PREDATED_DEFAULTS = {
    # Before dataset.crop.policy, images converted one by one got ImageNet's crops.
    ("dataset", "crop", "policy"):
        "imagenet",
}


def load_config(workdir):
  """The resolved config a run recorded in its workdir, with the keys it predates.

  The one place an older run's config is completed: a run recorded by an older kmodels
  lacks the keys added since (train.log_every_seconds broke launch.export on such a run);
  they take configs/base.py's defaults, which is what that run did without them, or
  PREDATED_DEFAULTS where it did something else. Code reading a config never guesses a
  fallback of its own.
  """
  storage.check_reachable(workdir.root, "--workdir")  # a bucket that cannot answer: one line
  recorded = reporting.read_json(workdir.config_json, None)
  if recorded is None:
    raise UserError(f"{workdir.root} holds no run (no config.json). Pass the --workdir of a "
                    "run made by launch.train.")
  if not isinstance(recorded, dict):
    raise UserError(f"{workdir.config_json} is not a run's config (a JSON "
                    f"{type(recorded).__name__}, where launch.train writes an object). Pass "
                    "the --workdir of a run made by launch.train.")
  defaults = base.get_config().to_dict()
  for path, value in PREDATED_DEFAULTS.items():
    *parents, leaf = path
    _nested(defaults, parents)[leaf] = value
  return ml_collections.ConfigDict(_with_defaults(defaults, recorded))


def _nested(tree, keys):
  for key in keys:
    tree = tree[key]
  return tree


def _with_defaults(defaults, recorded):
  merged = dict(defaults)
  for key, value in recorded.items():
    nested = isinstance(value, dict) and isinstance(defaults.get(key), dict)
    merged[key] = _with_defaults(defaults[key], value) if nested else value
  return merged


def checkpoint_path(workdir, config, which):
  """The checkpoint `which` (latest, best or a path) of the run in `workdir`."""
  if which not in CHECKPOINTS:
    if not tf.io.gfile.glob(which + ".index"):
      raise UserError(f"--checkpoint={which}: no checkpoint there (expected {which}.index). "
                      f"Use {' or '.join(CHECKPOINTS)}, or a path like "
                      f"{storage.join(workdir.checkpoints, 'ckpt-12')}.")
    return which
  if which == "best" and not trainers.TABLE[config.trainer].best_checkpoint:
    keeping = [t.name for t in trainers.TABLE.values() if t.best_checkpoint]
    raise UserError(f"--checkpoint=best: the {config.trainer} trainer keeps no best "
                    f"checkpoint (the {' and '.join(keeping)} trainer does). Use "
                    "--checkpoint=latest.")
  directory = (trainers.latest_checkpoints(config, workdir.checkpoints)
               if which == "latest" else storage.join(workdir.checkpoints, checkpoints.BEST))
  path = tf.train.latest_checkpoint(directory)
  if not path:
    raise UserError(f"No {which} checkpoint in {directory}: the run saved none yet (it "
                    "checkpoints at every epoch end).")
  return path


def _restored_model(config, info, path):
  model = models.build_from_config(config.model, info.image_shape, info.num_classes)
  # An optimizer only because compile wants one; evaluation never steps it.
  models.compile_classifier(model,
                            config.model.name,
                            optimizers.build_optimizer(config.train.optimizer, steps=1),
                            num_classes=info.num_classes,
                            label_smoothing=config.train.label_smoothing)
  status = tf.train.Checkpoint(model=model).restore(path).expect_partial()
  model(tf.zeros([1, *info.image_shape]), training=False)  # creates (and so restores) weights
  moving_average = config.train.optimizer.ema_momentum is not None
  if moving_average:  # the averages are optimizer variables: create them to restore them
    optimizers.build_variables(model.optimizer, model.trainable_variables)
  try:
    status.assert_existing_objects_matched()
  except AssertionError as e:
    raise UserError(f"Checkpoint {path} does not fit the model of this run's config.json "
                    f"({config.model.name}): {first_line(e, 300)}") from e
  if moving_average:  # what the run itself evaluated and exported
    model.optimizer.finalize_variable_values(model.trainable_variables)
    logging.info("Evaluating the moving average of the weights (train.optimizer.ema_momentum).")
  return model


def evaluate(workdir_root: str, split: Optional[str] = None, which: str = "latest") -> dict:
  """Evaluates the run in `workdir_root` on `split`; returns the metrics it wrote."""
  workdir = Workdir(workdir_root)
  config = load_config(workdir)
  if trainers.is_estimator(config.trainer):
    raise UserError(f"launch.evaluate re-evaluates Keras runs; this run used trainer="
                    f"{config.trainer}. Its export/ serves the same uint8 images, and running "
                    "its launch.train command again re-evaluates it.")
  split = split or config.dataset.eval_split
  datasets = data.load_split(config, split, "--split")
  info = datasets.info
  path = checkpoint_path(workdir, config, which)
  logging.info("Evaluating %s (%s) on %s split %r.", path, config.model.name, info.name, split)
  with precision.policy(config.precision):
    model = _restored_model(config, info, path)
    keras_trainer.settle_batchnorm(model, config, datasets)  # as the run did at its end
    every = config.train.log_every_seconds
    results = model.evaluate(
        datasets.eval,
        verbose=0,
        return_dict=True,
        callbacks=[progress.BatchCountdown(f"Evaluating on {split}", datasets.eval, every)])
    loss, accuracy = results["loss"], results["accuracy"]
    predicted = np.argmax(model.predict(
        datasets.eval,
        verbose=0,
        callbacks=[progress.BatchCountdown(f"Predicting {split}", datasets.eval, every)]),
                          axis=-1)
  labels = np.concatenate([y.numpy() for _, y in datasets.eval])
  return _write(workdir.evaluation(split), info, split, path, labels, predicted, float(loss),
                float(accuracy))


def _write(directory, info, split, path, labels, predicted, loss, accuracy):
  storage.makedirs(directory)
  metrics = {
      "dataset": info.name,
      "split": split,
      "checkpoint": path,
      "examples": len(labels),
      "loss": loss,
      "accuracy": accuracy
  }
  reporting.write_json(storage.join(directory, "metrics.json"), metrics)
  report = reporting.classification_report(labels, predicted, info.label_names)
  storage.write_atomic(storage.join(directory, "classification_report.txt"), report)
  reporting.plot_confusion_matrix(labels, predicted, info.label_names,
                                  storage.join(directory, "confusion_matrix.png"),
                                  f"{info.name} {split}: {storage.basename(path)}")
  logging.info("Classification report (%s, split %r):\n%s", info.name, split, report)
  return dict(metrics, directory=directory)
