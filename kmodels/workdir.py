"""The workdir: one place that names every file a run writes (docs and tests rely on them)."""

import json
import os
import tempfile

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

  def _path(self, name):
    return os.path.join(self.root, name)

  def prepare(self, config):
    """Creates the directory, proves it is writable, and records the resolved config."""
    try:
      os.makedirs(self.root, exist_ok=True)
      tempfile.TemporaryFile(dir=self.root).close()
    except OSError as e:
      raise UserError(f"Cannot write to workdir {self.root}: {e.strerror}. Pick a directory "
                      "you can write to with --workdir=DIR.") from e
    resolved = json.loads(config.to_json_best_effort())
    reporting.write_json(self.config_json, resolved)
    logging.info("Workdir %s; config:\n%s", self.root, json.dumps(resolved, indent=2))
