"""The workdir: one place that names every file a run writes (docs and tests rely on them).

A workdir is a local directory or a URL (gs://bucket/run); every access goes through
kmodels.storage. One run at a time may use it (kmodels.storage.locks says how, per filesystem).
"""

import json
import os

from absl import logging
import tensorflow as tf

from kmodels import optimizers, reporting, storage
from kmodels.errors import UserError
from kmodels.storage import locks

# What Vertex AI custom training sets in each task's environment (from the job's
# baseOutputDirectory: .../model/, .../checkpoints/, .../logs/). When set, the run puts
# its export, checkpoints and TensorBoard logs there, and the workdir defaults to the
# directory holding the model dir.
VERTEX_MODEL_DIR = "AIP_MODEL_DIR"
VERTEX_CHECKPOINT_DIR = "AIP_CHECKPOINT_DIR"
VERTEX_TENSORBOARD_DIR = "AIP_TENSORBOARD_LOG_DIR"


def vertex_default_root(environ=os.environ):
  """The workdir when --workdir is omitted on Vertex AI (AIP_MODEL_DIR's parent), or None."""
  model_dir = environ.get(VERTEX_MODEL_DIR)
  if not model_dir:
    return None
  model_dir = storage.absolute(model_dir)
  parent = storage.dirname(model_dir)
  # A bucket's root has no parent: then the model dir itself, which Workdir refuses.
  usable = parent and (not storage.has_scheme(model_dir) or "://" in parent)
  return parent if usable else model_dir


class Workdir:
  """Paths of a run's outputs under `root` (a local path or a URL).

  Vertex AI's AIP_MODEL_DIR, AIP_CHECKPOINT_DIR and AIP_TENSORBOARD_LOG_DIR, when set in
  `environ` (the training run passes os.environ; readers of a finished run don't),
  replace export/, checkpoints/ and tensorboard/: the SavedModel's saved_model.pb then
  sits at the root of AIP_MODEL_DIR, where Vertex looks for it.
  """

  def __init__(self, root, environ=None):
    environ = environ or {}
    self.root = storage.absolute(root)
    self.config_json = self._path("config.json")
    # Checkpoints to resume from (where each trainer keeps its own: trainers.TABLE)
    self.checkpoints = (self._vertex(environ, VERTEX_CHECKPOINT_DIR, "checkpoints") or
                        self._path("checkpoints"))
    self.tensorboard = (self._vertex(environ, VERTEX_TENSORBOARD_DIR, "TensorBoard logs") or
                        self._path("tensorboard"))
    # SavedModels for serving: numbered versions export/1/, export/2/, ... (TF Serving and
    # KServe serve the highest). On Vertex AI, AIP_MODEL_DIR itself: Vertex reads
    # saved_model.pb at that directory's root and versions models in its Model Registry.
    vertex_model_dir = self._vertex(environ, VERTEX_MODEL_DIR, "export")
    self.export = vertex_model_dir or self._path("export")
    self.export_versioned = vertex_model_dir is None
    self.metrics = self._path("metrics.json")
    self.history = self._path("history.json")  # per-epoch logs, kept across restarts
    self.curves = self._path("curves.png")
    self.report = self._path("classification_report.txt")
    self.confusion = self._path("confusion_matrix.png")
    self.lock = self._path(".lock")  # {"pid", "host", "started"} of the run using it
    self._held_lock = None

  def _path(self, name):
    return storage.join(self.root, name)

  def _vertex(self, environ, variable, what):
    """The directory `variable` names in `environ`, or None; a UserError for one that
    cannot hold the run's `what` apart from its other outputs."""
    value = environ.get(variable)
    if not value:
      return None
    path = storage.absolute(value)
    bucket_root = storage.has_scheme(path) and path.split("://", 1)[1].count("/") == 0
    filesystem_root = not path.strip("/")  # "/", and "//", which POSIX keeps as it is
    if filesystem_root or bucket_root or path == self.root:
      raise UserError(
          f"{variable}={value!r} cannot hold this run's {what}: it is "
          f"{'the workdir ' + self.root if path == self.root else 'a filesystem or bucket root'}. "
          f"Vertex AI sets it to a directory of its own under the job's base output "
          f"directory (gs://BUCKET/DIR/model/, .../checkpoints/, .../logs/). Unset "
          f"{variable} or point it at such a directory.")
    return path

  def prepare(self, config, overwrite=False):
    """Creates the directory, proves it is writable, takes the lock, records the config.

    A workdir holding a run of another experiment (RUN_DEFINING keys differ) is refused,
    or with `overwrite` emptied of that run's outputs first; one whose run saved nothing
    is emptied without it. Call release() when the run ends (also when it fails).
    """
    if not self.root.strip("/"):
      raise UserError("The workdir is the filesystem root (/): a run writes a dozen files "
                      "and directories there. Pick a directory of its own with --workdir=DIR.")
    storage.check_reachable(self.root, "Workdir")
    try:
      storage.makedirs(self.root)
      probe = self._path(".write-probe")
      with tf.io.gfile.GFile(probe, "w") as f:
        f.write("")
      storage.remove(probe)
    except (OSError, tf.errors.OpError) as e:
      raise UserError(f"Cannot write to workdir {self.root}: {_reason(e)}. Pick a directory "
                      "you can write to with --workdir=DIR.") from e
    self._held_lock = locks.acquire(self.lock, self.root)
    resolved = json.loads(config.to_json_best_effort())
    try:
      self._check_same_experiment(resolved, overwrite)
    except UserError:
      self.release()
      raise
    reporting.write_json(self.config_json, resolved)
    logging.info("Workdir %s; config:\n%s", self.root, json.dumps(resolved, indent=2))

  def _check_same_experiment(self, resolved, overwrite):
    previous = reporting.read_json(self.config_json, None)
    differences = _differences(previous, resolved) if previous else []
    # A run that failed before it saved anything (a bad model.* value fails after the
    # config is recorded) left only its config: nothing to resume or to mix, so the
    # corrected command starts in its place without --overwrite.
    worth_keeping = previous is not None and self._saved_anything()
    if worth_keeping and not overwrite:
      optimizers.check_schedule_kept(previous, resolved)
    if not differences:
      return
    listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in differences)
    if worth_keeping and not overwrite:
      raise UserError(
          f"Workdir {self.root} holds a run of another experiment ({listed}). Resuming it "
          "would mix the two. Use a new --workdir, or pass --overwrite to delete that "
          "run's outputs and start over.")
    if worth_keeping:
      logging.warning("--overwrite: deleting the outputs of the previous run in %s (%s).",
                      self.root, listed)
    else:
      logging.info(
          "Workdir %s holds the config of a run that saved nothing (%s); this run "
          "replaces it.", self.root, listed)
    for path in self.run_outputs():
      storage.remove(path)

  def _saved_anything(self):
    """Whether a run here saved what a resume or a reader uses: a checkpoint, its history,
    metrics or an export."""
    if any(storage.exists(path) for path in (self.history, self.metrics)):
      return True
    return bool(
        storage.isdir(self.checkpoints) and storage.listdir(self.checkpoints) or
        self.current_export())

  def run_outputs(self):
    return [
        self.config_json, self.checkpoints, self.tensorboard, self.export, self.metrics,
        self.history, self.curves, self.report, self.confusion,
        self.evaluation()
    ]

  def current_export(self):
    return current_export(self.export)

  def evaluation(self, split=None):
    """Where launch.evaluate writes its outputs for `split` (all splits: None)."""
    base = self._path("evaluation")
    return storage.join(base, _safe_name(split)) if split else base

  def release(self):
    """Drops the lock if this process holds it."""
    if self._held_lock is not None:
      self._held_lock.release()
      self._held_lock = None


def export_versions(export_root):
  """The version numbers of the complete SavedModels under `export_root`, ascending."""
  if not storage.isdir(export_root):
    return []
  names = (name.rstrip("/") for name in storage.listdir(export_root))
  return sorted(
      int(name)
      for name in names
      if name.isdigit() and storage.exists(storage.join(export_root, name, SAVED_MODEL)))


def current_export(export_root):
  """The SavedModel a server serves from `export_root`: its highest version; or the root
  itself when the SavedModel sits there (Vertex AI's AIP_MODEL_DIR, exports of kmodels
  0.1); None before the first export."""
  versions = export_versions(export_root)
  if versions:
    return storage.join(export_root, str(versions[-1]))
  return export_root if storage.exists(storage.join(export_root, SAVED_MODEL)) else None


SAVED_MODEL = "saved_model.pb"


def _safe_name(split):
  """test[:100] -> test_100: a split as a directory name."""
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in split).strip("_") or "split"


def _reason(error):
  return getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)


# Config keys that make two runs different experiments. Others may change on a resume:
# train.epochs (train longer, unless a cosine schedule fixed the run's length: see
# optimizers.check_schedule_kept), the data location, the hardware and distribution.
RUN_DEFINING = ("model", "trainer", "estimator", "precision", "dataset.name", "dataset.source",
                "dataset.augment", "dataset.image_size", "dataset.channels", "train.batch_size",
                "train.seed", "train.optimizer", "train.label_smoothing", "train.sync_batchnorm")


def _flatten(tree, prefix=""):
  if not isinstance(tree, dict):
    return {prefix.rstrip("."): tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_flatten(value, f"{prefix}{key}."))
  return flat


def run_defining_values(config_dict):
  """{"a.b": value} of `config_dict` (a resolved config as a dict) under RUN_DEFINING."""
  return {
      k: v for k, v in _flatten(config_dict).items() if any(k == d or k.startswith(d + ".")
                                                            for d in RUN_DEFINING)
  }


def _differences(previous, current):
  """(key, previous, current) for each RUN_DEFINING key whose value changed. Keys the
  previous run's config lacks (added by a later kmodels) are not differences."""
  old, new = run_defining_values(previous), _flatten(current)
  return [(k, old[k], new.get(k)) for k in sorted(old) if old[k] != new.get(k)]
