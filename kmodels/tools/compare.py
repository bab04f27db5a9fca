"""Side by side: the same network trained by every path kmodels has, on the same data.

Each path is one `python -m launch.train` process with the comparison's config, so every
path pays its own start-up (imports, graph building, tracing) and none inherits a warm
process from another. The network is the MNIST styles tutorial's MLP (Flatten -> Dense 256 ReLU ->
Dense softmax) everywhere: as Sequential, Functional and subclassed Keras models, in the custom
GradientTape loop, as a `tf.estimator.DNNClassifier` with hidden_units (256,), and as the
Sequential model moved into an Estimator by `model_to_estimator`; then the trained
DNNClassifier migrated to Keras by `launch.migrate` (its accuracy on the test split, and
predict speed of the Estimator and of the Keras model beside each other).
"""

import csv
import io
import os
import subprocess
import sys
import time
from typing import List

from absl import logging
import matplotlib.pyplot as plt  # the Agg backend: kmodels.runtime.configure
import ml_collections

import kmodels
from kmodels import reporting, storage, trainers
from kmodels.errors import UserError
from kmodels.trainers import estimator

MIGRATE = "migrate"  # not a trainer: the "estimator" path's model_dir through launch.migrate
# path -> (trainer, model.name)
PATHS = {
    "sequential": ("fit", "mlp"),
    "functional": ("fit", "mlp_functional"),
    "subclassed": ("fit", "mlp_subclass"),
    "custom_loop": ("custom_loop", "mlp"),
    "estimator": ("estimator", "mlp"),  # DNNClassifier; model.name unused
    "keras_estimator": ("keras_estimator", "mlp"),
    # Not trained: the "estimator" path's model_dir through launch.migrate.
    "estimator_migrated": (MIGRATE, "mlp"),
}
COLUMNS = ["path", "trainer", "model", "parameters", "test_loss", "test_accuracy",
           "train_seconds", "images_per_second", "first_step_seconds",
           "predict_images_per_second", "status"]
# Where `launch` sits beside `kmodels` (a clone, or site-packages after pip install).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(kmodels.__file__)))


def _estimator_missing():
  try:
    estimator.check_available("estimator")
    return None
  except UserError as e:
    return str(e)


def _launch(module, args, path_dir):
  """Runs `python -m launch.<module> args` with its output in path_dir/log.txt; exit code."""
  storage.makedirs(path_dir)
  with storage.local_copy_for_writing(storage.join(path_dir, "log.txt")) as log_path, \
       open(log_path, "w") as log:
    return subprocess.call([sys.executable, "-m", f"launch.{module}", *args], cwd=REPO_ROOT,
                           stdout=log, stderr=subprocess.STDOUT,
                           env=dict(os.environ, PYTHONPATH=REPO_ROOT))


def _run_path(path, config_file, overrides, workdir):
  """Trains one path in its own process; returns its table row."""
  trainer, model = PATHS[path]
  row = {"path": path, "trainer": trainer,
         "model": model if trainer == MIGRATE or trainers.TABLE[trainer].registry_model
                  else "DNNClassifier[256]"}
  needs_estimator = trainer == MIGRATE or trainers.is_estimator(trainer)
  if needs_estimator and _estimator_missing():
    return dict(row, status="skipped: tf.estimator needs the full lane (TF 2.15)")
  path_dir = storage.join(workdir, path)
  if trainer == MIGRATE:
    return _migrated_row(row, workdir, path_dir)
  launched = time.time()
  code = _launch("train", [f"--config={config_file}", f"--workdir={path_dir}", *overrides,
                           f"--config.trainer={trainer}", f"--config.model.name={model}"],
                 path_dir)
  metrics = reporting.read_json(storage.join(path_dir, "metrics.json"), None)
  if code or metrics is None:
    return dict(row, status=f"failed (exit {code}), see {path}/log.txt")
  first_step = metrics.get("first_step_unix_time")
  return dict(row, status="ok", parameters=metrics["parameters"],
              test_loss=metrics["test_loss"], test_accuracy=metrics["test_accuracy"],
              train_seconds=metrics["train_seconds"],
              images_per_second=metrics["images_per_second"],
              first_step_seconds=first_step - launched if first_step else None)


def _migrated_row(row, workdir, path_dir):
  """The "estimator" path's DNNClassifier migrated to Keras, proven on the test split."""
  source = storage.join(workdir, "estimator")
  row["model"] = "DNNClassifier[256] as Keras"
  if not storage.exists(storage.join(source, "metrics.json")):
    return dict(row, status="skipped: needs the estimator path (list it before)")
  code = _launch("migrate", [f"--estimator_dir={source}", f"--workdir={path_dir}"], path_dir)
  record = reporting.read_json(storage.join(path_dir, "migration.json"), None)
  if code or record is None:
    return dict(row, status=f"failed (exit {code}), see estimator_migrated/log.txt")
  proof = record["proof"]
  return dict(row, status="ok", test_accuracy=proof["keras_accuracy"],
              parameters=proof["parameters"],
              predict_images_per_second=proof["keras_predict_images_per_second"],
              estimator_predict_images_per_second=proof["estimator_predict_images_per_second"],
              max_abs_difference=proof["max_abs_difference"])


def _with_estimator_predict_speed(rows):
  """The estimator row's predict speed, measured by the migration beside the Keras one."""
  migrated = next((r for r in rows if r.get("estimator_predict_images_per_second")), None)
  for row in rows:
    if migrated and row["path"] == "estimator":
      row["predict_images_per_second"] = migrated["estimator_predict_images_per_second"]
  return rows


def _format(value, column):
  if value is None or value == "":
    return "—"
  if column == "test_accuracy":
    return f"{100 * value:.2f} %"
  if column in ("test_loss",):
    return f"{value:.4f}"
  if column in ("parameters",):
    return f"{value:,}"
  if isinstance(value, float):
    return f"{value:.1f}" if column.endswith("seconds") else f"{value:.0f}"
  return str(value)


def markdown_table(rows):
  lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
  lines += ["| " + " | ".join(_format(r.get(c), c) for c in COLUMNS) + " |" for r in rows]
  return "\n".join(lines)


def _write_csv(rows, path):
  text = io.StringIO(newline="")
  writer = csv.DictWriter(text, COLUMNS, extrasaction="ignore")
  writer.writeheader()
  writer.writerows({c: r.get(c, "") for c in COLUMNS} for r in rows)
  storage.write_atomic(path, text.getvalue())


def _bar_chart(rows, path, title):
  done = [r for r in rows if r["status"] == "ok"]
  fig, axes = plt.subplots(1, 3, figsize=(15, 4))
  for ax, column, label in ((axes[0], "test_accuracy", "test accuracy"),
                            (axes[1], "images_per_second", "training images / s"),
                            (axes[2], "first_step_seconds", "seconds to first step")):
    ax.bar([r["path"] for r in done], [r.get(column) or 0 for r in done], color="tab:blue")
    ax.set_title(label)
    ax.tick_params(axis="x", rotation=35)
    ax.grid(axis="y", alpha=0.3)
  fig.suptitle(title)
  fig.tight_layout()
  storage.save_figure(fig, path, dpi=100)
  plt.close(fig)


def parse_paths(paths):
  """"sequential,estimator" -> ["sequential", "estimator"], each checked."""
  names = [p.strip() for p in paths.split(",") if p.strip()]
  unknown = [p for p in names if p not in PATHS]
  if unknown or not names:
    raise UserError(f"compare.paths {paths!r}: unknown {', '.join(unknown) or '(empty)'}. "
                    f"Choose from: {', '.join(PATHS)}.")
  return names


def run(config: ml_collections.ConfigDict, config_file: str, overrides: List[str],
        workdir: str) -> List[dict]:
  """Trains every path in `config.compare.paths`, writes comparison.{md,csv,png,json}.

  Returns:
    One dict per path with COLUMNS' keys.
  """
  paths = parse_paths(config.compare.paths)
  storage.check_reachable(workdir, "Workdir")
  storage.makedirs(workdir)
  rows = []
  for i, path in enumerate(paths, 1):
    logging.info("[%d/%d] %s: training (log in %s/log.txt)...", i, len(paths), path,
                 storage.join(workdir, path))
    rows.append(_run_path(path, config_file, overrides, workdir))
    logging.info("[%d/%d] %s: %s", i, len(paths), path, rows[-1]["status"])
  rows = _with_estimator_predict_speed(rows)
  title = (f"{config.dataset.name}: {config.train.epochs} epoch(s), batch "
           f"{config.train.batch_size}, {config.train.optimizer.name} "
           f"{config.train.optimizer.learning_rate}")
  table = markdown_table(rows)
  storage.write_atomic(storage.join(workdir, "comparison.md"),
                       f"# Comparison: {title}\n\n{table}\n\nConfig: {config_file} "
                       f"{' '.join(overrides)}\n")
  _write_csv(rows, storage.join(workdir, "comparison.csv"))
  _bar_chart(rows, storage.join(workdir, "comparison.png"), title)
  reporting.write_json(storage.join(workdir, "comparison.json"), rows)
  print(f"\n{title}\n\n{table}\n\nWritten: comparison.md, comparison.csv, comparison.png "
        f"in {workdir}", flush=True)
  return rows
