"""What a run leaves for people to read: curves.png, the classification report, JSON files."""

import json

import matplotlib.pyplot as plt  # the Agg backend: kmodels.runtime.configure
from matplotlib.ticker import MaxNLocator
import numpy as np

from kmodels import storage
from kmodels.errors import UserError, first_line


def write_json(path, value):
  """Writes JSON atomically (local path or URL): never half a file, even after a crash."""
  storage.write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path, default):
  """The JSON in `path`, `default` if there is no such file, or a UserError naming a file
  that is not JSON (kmodels writes them atomically, so something else damaged it)."""
  if not storage.exists(path):
    return default
  try:
    return json.loads(storage.read_text(path))
  except json.JSONDecodeError as e:
    raise UserError(f"{path} is damaged: not JSON ({first_line(e)}). kmodels writes it "
                    "whole or not at all; restore it from a copy, or run anew in a new "
                    "--workdir.") from e


def plot_curves(history, path, title):
  """One PNG: train/val loss (left) and train/val accuracy (right) per epoch."""
  epochs = [h["epoch"] for h in history]
  fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
  for ax, metric in ((loss_ax, "loss"), (acc_ax, "accuracy")):
    for prefix, style in (("", "-o"), ("val_", "--s")):
      values = [h.get(prefix + metric) for h in history]
      if any(v is not None for v in values):
        ax.plot(epochs, values, style, label=f"{'val' if prefix else 'train'}_{metric}")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
  fig.suptitle(title)
  fig.tight_layout()
  storage.save_figure(fig, path, dpi=100)
  plt.close(fig)


def classification_report(labels, predictions, label_names):
  """Per-class precision, recall, f1 and support, laid out like scikit-learn's report."""
  labels, predictions = np.asarray(labels), np.asarray(predictions)
  width = max(len(n) for n in list(label_names) + ["weighted avg"])
  rows = [f"{'':>{width}}  precision    recall  f1-score   support", ""]
  stats = []
  for index, name in enumerate(label_names):
    true_positive = np.sum((predictions == index) & (labels == index))
    predicted, support = np.sum(predictions == index), np.sum(labels == index)
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / support if support else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    stats.append((precision, recall, f1, support))
    rows.append(f"{name:>{width}}  {precision:9.4f} {recall:9.4f} {f1:9.4f} {support:9d}")
  stats = np.array(stats, dtype=np.float64)
  total = int(stats[:, 3].sum())
  accuracy = float(np.mean(labels == predictions)) if total else 0.0
  rows += ["", f"{'accuracy':>{width}}  {'':9} {'':9} {accuracy:9.4f} {total:9d}"]
  rows.append(f"{'macro avg':>{width}}  " +
              " ".join(f"{v:9.4f}" for v in stats[:, :3].mean(axis=0)) + f" {total:9d}")
  weights = stats[:, 3] / max(total, 1)
  rows.append(f"{'weighted avg':>{width}}  " +
              " ".join(f"{v:9.4f}" for v in weights @ stats[:, :3]) + f" {total:9d}")
  return "\n".join(rows) + "\n"


def confusion_matrix(labels, predictions, num_classes):
  """counts[true, predicted] over the examples."""
  counts = np.zeros((num_classes, num_classes), dtype=np.int64)
  np.add.at(counts, (np.asarray(labels), np.asarray(predictions)), 1)
  return counts


# Above this many classes the plot shows the classes with the most errors only: a
# 1000-class matrix would be a 600-inch figure with a million labels (ImageNet).
MAX_CLASSES_PLOTTED = 30


def most_confused(counts, limit):
  """Indices of the `limit` classes with the most errors (as true or as predicted class)."""
  errors = counts.sum(axis=0) + counts.sum(axis=1) - 2 * np.diag(counts)
  return np.sort(np.argsort(-errors, kind="stable")[:limit])


def plot_confusion_matrix(labels, predictions, label_names, path, title):
  """A PNG of the confusion matrix: rows true classes, columns predicted, with the names.

  With more than MAX_CLASSES_PLOTTED classes, the rows and columns of the classes with the
  most errors (classification_report.txt has every class).
  """
  counts = confusion_matrix(labels, predictions, len(label_names))
  if len(label_names) > MAX_CLASSES_PLOTTED:
    shown = most_confused(counts, MAX_CLASSES_PLOTTED)
    counts = counts[np.ix_(shown, shown)]
    title = f"{title}\nthe {len(shown)} of {len(label_names)} classes with the most errors"
    label_names = [label_names[i] for i in shown]
  size = max(5.0, 0.6 * len(label_names) + 2)
  fig, ax = plt.subplots(figsize=(size + 1, size))
  image = ax.imshow(counts, cmap="Blues")
  fig.colorbar(image, ax=ax, fraction=0.046)
  ticks = range(len(label_names))
  ax.set_xticks(ticks, label_names, rotation=45, ha="right")
  ax.set_yticks(ticks, label_names)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  threshold = counts.max() / 2 if counts.size else 0
  for (row, column), count in np.ndenumerate(counts):
    ax.text(column,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=8,
            color="white" if count > threshold else "black")
  ax.set_title(title)
  fig.tight_layout()
  storage.save_figure(fig, path, dpi=100)
  plt.close(fig)


# Final metrics the HParams dashboard compares runs by (metrics.json keys).
HPARAMS_METRICS = ("test_accuracy", "test_loss", "test_top5_accuracy", "images_per_second")


def write_hparams(logdir, hparams, metrics, step):
  """TensorBoard HParams summaries under `logdir`: the run's hyperparameters ({name: value};
  lists and None are written as their text) and its final metrics, so runs sharing a parent
  log directory compare side by side (TensorBoard's and Vertex AI TensorBoard's HParams tab)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import api as hp  # pylint: disable=g-import-not-at-top
  final = {k: float(metrics[k]) for k in HPARAMS_METRICS if metrics.get(k) is not None}
  with tf.summary.create_file_writer(logdir).as_default():
    hp.hparams_config(hparams=[hp.HParam(name) for name in sorted(hparams)],
                      metrics=[hp.Metric(name) for name in final])
    hp.hparams({
        name: value if isinstance(value, (bool, int, float, str)) else str(value)
        for name, value in hparams.items()
    })
    for name, value in final.items():
      tf.summary.scalar(name, value, step=step)
