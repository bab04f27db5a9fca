"""The workdir: one place that names every file a run writes (docs and tests rely on them)."""

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time

from absl import logging

from kmodels import reporting
from kmodels.errors import UserError


class Workdir:
  """Paths of a run's outputs under `root`."""

  def __init__(self, root):
    self.root = os.path.abspath(os.path.expanduser(root))
    self.config_json = self._path("config.json")
    self.checkpoints = self._path("checkpoints")  # BackupAndRestore: resume after a crash
    self.tensorboard = self._path("tensorboard")
    self.export = self._path("export")  # SavedModel of the trained model
    self.metrics = self._path("metrics.json")
    self.history = self._path("history.json")  # per-epoch logs, kept across restarts
    self.curves = self._path("curves.png")
    self.report = self._path("classification_report.txt")
    self.lock = self._path(".lock")  # {"pid", "host", "started"} of the run using it

  def _path(self, name):
    return os.path.join(self.root, name)

  def prepare(self, config, overwrite=False):
    """Creates the directory, proves it is writable, takes the lock, records the config.

    A workdir holding a run of another experiment (RUN_DEFINING keys differ) is refused,
    or with `overwrite` emptied of that run's outputs first. Call release() when the run
    ends (also when it fails).
    """
    try:
      os.makedirs(self.root, exist_ok=True)
      tempfile.TemporaryFile(dir=self.root).close()
    except OSError as e:
      raise UserError(f"Cannot write to workdir {self.root}: {e.strerror}. Pick a directory "
                      "you can write to with --workdir=DIR.") from e
    self._acquire_lock()
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
    if not differences:
      return
    listed = "; ".join(f"{key}: {old!r} -> {new!r}" for key, old, new in differences)
    if not overwrite:
      raise UserError(
          f"Workdir {self.root} holds a run of another experiment ({listed}). Resuming it "
          "would mix the two. Use a new --workdir, or pass --overwrite to delete that "
          "run's outputs and start over.")
    logging.warning("--overwrite: deleting the outputs of the previous run in %s (%s).",
                    self.root, listed)
    for path in self.run_outputs():
      if os.path.isdir(path):
        shutil.rmtree(path)
      elif os.path.exists(path):
        os.remove(path)

  def run_outputs(self):
    return [self.config_json, self.checkpoints, self.tensorboard, self.export, self.metrics,
            self.history, self.curves, self.report]

  def _acquire_lock(self):
    """One run per workdir: two would overwrite each other's checkpoints and results."""
    owner = {"pid": os.getpid(), "host": socket.gethostname(),
             "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    for _ in range(2):
      try:
        fd = os.open(self.lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
      except FileExistsError:
        holder = reporting.read_json(self.lock, None)
        if holder is not None and not _is_stale(holder):
          raise UserError(
              f"Workdir {self.root} is in use by another run (pid {holder.get('pid')} on "
              f"{holder.get('host')}, since {holder.get('started')}). Wait for it to end or "
              f"use another --workdir; if that run is gone, delete {self.lock}.") from None
        logging.warning("Removing the stale lock of a run that is gone: %s", holder)
        with contextlib.suppress(FileNotFoundError):
          os.remove(self.lock)
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(owner, f)
      return
    raise UserError(f"Could not lock workdir {self.root}; another run keeps taking it.")

  def release(self):
    """Drops the lock if this process holds it."""
    holder = reporting.read_json(self.lock, None)
    if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
      with contextlib.suppress(FileNotFoundError):
        os.remove(self.lock)


# Config keys that make two runs different experiments. Others may change on a resume:
# train.epochs (train longer), the data location, the hardware and distribution.
RUN_DEFINING = ("model", "trainer", "estimator", "precision", "dataset.name",
                "dataset.source", "dataset.augment", "train.batch_size", "train.seed",
                "train.optimizer")


def _flatten(tree, prefix=""):
  if not isinstance(tree, dict):
    return {prefix.rstrip("."): tree}
  flat = {}
  for key, value in tree.items():
    flat.update(_flatten(value, f"{prefix}{key}."))
  return flat


def _differences(previous, current):
  """(key, previous, current) for each RUN_DEFINING key whose value changed."""
  old, new = _flatten(previous), _flatten(current)
  keys = sorted(k for k in set(old) | set(new)
                if any(k == d or k.startswith(d + ".") for d in RUN_DEFINING))
  return [(k, old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)]


def _is_stale(holder):
  """A lock is stale when its process, on this host, no longer exists."""
  if holder.get("host") != socket.gethostname():
    return False  # can't tell from here; the message says how to remove it
  try:
    os.kill(int(holder["pid"]), 0)
  except ProcessLookupError:
    return True
  except (PermissionError, KeyError, TypeError, ValueError):
    return False
  return False

