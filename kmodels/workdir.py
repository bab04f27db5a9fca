"""The workdir: one place that names every file a run writes (docs and tests rely on them)."""

import contextlib
import json
import os
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

  def prepare(self, config):
    """Creates the directory, proves it is writable, takes the lock, records the config.

    Call release() when the run ends (also when it fails).
    """
    try:
      os.makedirs(self.root, exist_ok=True)
      tempfile.TemporaryFile(dir=self.root).close()
    except OSError as e:
      raise UserError(f"Cannot write to workdir {self.root}: {e.strerror}. Pick a directory "
                      "you can write to with --workdir=DIR.") from e
    self._acquire_lock()
    resolved = json.loads(config.to_json_best_effort())
    reporting.write_json(self.config_json, resolved)
    logging.info("Workdir %s; config:\n%s", self.root, json.dumps(resolved, indent=2))

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

