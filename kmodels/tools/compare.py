"""Side by side: the same network trained by every path kmodels has, on the same data.

Each path is one `python -m launch.train` process with the comparison's config, so every
path pays its own start-up (imports, graph building, tracing) and none inherits a warm
process from another. The network is the MNIST styles tutorial's MLP (Flatten -> Dense 256 ReLU ->
Dense softmax) everywhere: as Sequential, Functional and subclassed Keras models, in the custom
GradientTape loop, as a `tf.estimator.DNNClassifier` with hidden_units (256,), and as the
Sequential model moved into an Estimator by `model_to_estimator`; beside them the linear
baseline (`LinearClassifier` on the pixels) and wide & deep (`DNNLinearCombinedClassifier`:
both parts on the pixels); then each trained canned Estimator migrated to Keras by
`launch.migrate` (its accuracy on the test split, and predict speed of the Estimator and of
the Keras model beside each other).
"""

import csv
import io
import os
import subprocess
import sys
import time
import typing
from typing import List

from absl import logging
import matplotlib.pyplot as plt  # the Agg backend: kmodels.runtime.configure
import ml_collections

import kmodels
from kmodels import reporting, storage, trainers
from kmodels.errors import UserError
from kmodels.trainers import estimator

MIGRATE = "migrate"  # not a trainer: another path's Estimator model_dir through launch.migrate


class Path(typing.NamedTuple):
  trainer: str  # a kmodels trainer, or MIGRATE
  model: str  # config.model.name (the registry's), or the canned Estimator's label
  overrides: typing.Tuple[str, ...] = ()
  migrates: typing.Optional[str] = None  # MIGRATE: the path whose model_dir it migrates


_WIDE = "--config.estimator.canned="
PATHS = {
    "sequential":
        Path("fit", "mlp"),
    "functional":
        Path("fit", "mlp_functional"),
    "subclassed":
        Path("fit", "mlp_subclass"),
    "custom_loop":
        Path("custom_loop", "mlp"),
    "estimator":
        Path("estimator", "DNNClassifier[256]", (f"{_WIDE}dnn",)),
    "estimator_linear":
        Path("estimator", "LinearClassifier", (f"{_WIDE}linear",)),
    "estimator_wide_deep":
        Path("estimator", "DNNLinearCombinedClassifier[256]", (f"{_WIDE}dnn_linear_combined",)),
    "keras_estimator":
        Path("keras_estimator", "mlp"),
    # Not trained: an Estimator path's model_dir through launch.migrate.
    "estimator_migrated":
        Path(MIGRATE, "DNNClassifier[256] as Keras", migrates="estimator"),
    "estimator_linear_migrated":
        Path(MIGRATE, "LinearClassifier as Keras", migrates="estimator_linear"),
    "estimator_wide_deep_migrated":
        Path(MIGRATE, "DNNLinearCombinedClassifier[256] as Keras", migrates="estimator_wide_deep"),
}
COLUMNS = [
    "path", "trainer", "model", "parameters", "test_loss", "test_accuracy", "train_seconds",
    "images_per_second", "first_step_seconds", "predict_images_per_second", "status"
]
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
    return subprocess.call([sys.executable, "-m", f"launch.{module}", *args],
                           cwd=REPO_ROOT,
                           stdout=log,
                           stderr=subprocess.STDOUT,
                           env=dict(os.environ, PYTHONPATH=REPO_ROOT))


def _run_path(path, config_file, overrides, workdir):
  """Trains one path in its own process; returns its table row."""
  spec = PATHS[path]
  row = {"path": path, "trainer": spec.trainer, "model": spec.model}
  needs_estimator = spec.trainer == MIGRATE or trainers.is_estimator(spec.trainer)
  if needs_estimator and _estimator_missing():
    return dict(row, status="skipped: tf.estimator needs the full lane (TF 2.15)")
  path_dir = storage.join(workdir, path)
  if spec.trainer == MIGRATE:
    return _migrated_row(row, storage.join(workdir, spec.migrates), path_dir)
  model = spec.model if trainers.TABLE[spec.trainer].registry_model else "mlp"  # unused
  launched = time.time()
  code = _launch("train", [
      f"--config={config_file}", f"--workdir={path_dir}", *overrides,
      f"--config.trainer={spec.trainer}", f"--config.model.name={model}", *spec.overrides
  ], path_dir)
  metrics = reporting.read_json(storage.join(path_dir, "metrics.json"), None)
  if code or metrics is None:
    return dict(row, status=f"failed (exit {code}), see {path}/log.txt")
  first_step = metrics.get("first_step_unix_time")
  return dict(row,
              status="ok",
              parameters=metrics["parameters"],
              test_loss=metrics["test_loss"],
              test_accuracy=metrics["test_accuracy"],
              train_seconds=metrics["train_seconds"],
              images_per_second=metrics["images_per_second"],
              first_step_seconds=first_step - launched if first_step else None)


def _migrated_row(row, source, path_dir):
  """An Estimator path's model_dir migrated to Keras, proven on the test split."""
  if not storage.exists(storage.join(source, "metrics.json")):
    return dict(row,
                status=f"skipped: needs the {os.path.basename(source)} path (list it "
                "before)")
  code = _launch("migrate", [f"--estimator_dir={source}", f"--workdir={path_dir}"], path_dir)
  record = reporting.read_json(storage.join(path_dir, "migration.json"), None)
  if code or record is None or "keras_accuracy" not in record["proof"]:
    return dict(row, status=f"failed (exit {code}), see {row['path']}/log.txt")
  proof = record["proof"]
  # migration.py (DNNClassifier) counts images, feature_columns.py tf.Examples of them.
  unit = "images" if "keras_predict_images_per_second" in proof else "examples"
  return dict(row,
              status="ok",
              test_accuracy=proof["keras_accuracy"],
              parameters=proof["parameters"],
              migrated_from=os.path.basename(source),
              predict_images_per_second=proof[f"keras_predict_{unit}_per_second"],
              estimator_predict_images_per_second=proof[f"estimator_predict_{unit}_per_second"],
              max_abs_difference=proof["max_abs_difference"])


def _with_estimator_predict_speed(rows):
  """Each migrated Estimator path's predict speed, measured by its migration beside the
  Keras model's."""
  speeds = {
      r["migrated_from"]: r["estimator_predict_images_per_second"]
      for r in rows
      if r.get("migrated_from")
  }
  for row in rows:
    if row["path"] in speeds:
      row["predict_images_per_second"] = speeds[row["path"]]
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
  storage.write_atomic(
      storage.join(workdir, "comparison.md"),
      f"# Comparison: {title}\n\n{table}\n\nConfig: {config_file} "
      f"{' '.join(overrides)}\n")
  _write_csv(rows, storage.join(workdir, "comparison.csv"))
  _bar_chart(rows, storage.join(workdir, "comparison.png"), title)
  reporting.write_json(storage.join(workdir, "comparison.json"), rows)
  print(
      f"\n{title}\n\n{table}\n\nWritten: comparison.md, comparison.csv, comparison.png "
      f"in {workdir}",
      flush=True)
  return rows
