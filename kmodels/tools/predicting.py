"""Classifies image files, or a split of a run's dataset, with a run's serving export.

Files go, as they are, through the export's `serving_bytes` signature: the export's own
decoder, centre crop and resize, the same a server runs, so what `launch.predict` prints is
what a server says. A split of the run's dataset goes through the uint8-image signature
(`serving_default`, or `serving_images` in an Estimator migrated by launch.migrate).
"""

import csv
import io
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from kmodels import data, progress, serving, storage
from kmodels.data import images
from kmodels.errors import UserError, first_line
from kmodels.tools import runtimes
from kmodels.workdir import current_export

BATCH = 256


def open_model(path):
  """A Predictor of a workdir, an export version, or a LiteRT/ONNX file exported from one."""
  storage.check_reachable(path, "--model")  # a bucket that cannot answer: one line, now
  return FilePredictor(path) if path.endswith(FILE_SUFFIXES) else Predictor(path)


FILE_SUFFIXES = (".tflite", ".onnx")


class Predictor:
  """A loaded export: its input shape, its label names, and batch classifiers."""

  def __init__(self, path):
    self.export_dir = find_export(path)
    self.name = self.export_dir  # what predicts, for people
    self.card = serving.read_card(self.export_dir)
    loaded = serving.load_export(self.export_dir)
    self._pixels_signature, spec = _uint8_images_signature(loaded)
    if spec is None:
      raise UserError(f"{self.export_dir} has no signature taking uint8 `images` (a kmodels "
                      "export's serving_default does). A migrated Estimator that was not "
                      "trained by kmodels takes its own features: call its serving_default "
                      "with saved_model_cli or TF Serving.")
    self.image_shape = tuple(spec.shape[1:])
    self._bytes_signature = loaded.signatures.get("serving_bytes") or self._decode_then_pixels
    self._loaded = loaded  # keeps the signatures' variables alive

  def probabilities(self, pixels):
    """float32 [N, classes] for uint8 images [N, H, W, C]."""
    return _in_batches(
        len(pixels), lambda start, stop: self._pixels_signature(images=tf.constant(pixels[
            start:stop]))["probabilities"].numpy())

  def classify_files(self, sources, encoded):
    """(sources kept, float32 [N, classes]) for the files' bytes, through serving_bytes.

    A file whose header looked right but which does not decode fails its whole batch;
    that batch is then classified file by file, and the files that fail are reported and
    skipped.
    """
    kept, outputs = [], []
    countdown = progress.Countdown("Classifying files", len(encoded), "files")
    for start in range(0, len(encoded), BATCH):
      batch = slice(start, start + BATCH)
      try:
        outputs.append(self._classify_bytes(encoded[batch]))
        kept += sources[batch]
      except tf.errors.InvalidArgumentError:
        for source, one in zip(sources[batch], encoded[batch]):
          try:
            outputs.append(self._classify_bytes([one]))
            kept.append(source)
          except tf.errors.InvalidArgumentError as e:
            logging.error("%s: does not decode (%s); skipped", source, first_line(e))
      countdown.update(min(start + BATCH, len(encoded)))
    if not kept:
      raise UserError("None of the files decoded (see the lines above). Pass PNG, JPEG, "
                      "GIF or BMP files, or directories of them.")
    return kept, np.concatenate(outputs)

  def _classify_bytes(self, encoded):
    return self._bytes_signature(images=tf.constant(encoded, tf.string))["probabilities"].numpy()

  def _decode_then_pixels(self, images):  # pylint: disable=redefined-outer-name
    """For exports without serving_bytes (Estimator runs of kmodels 0.1): the decoder
    serving_bytes holds, then the uint8 signature."""
    to_pixels = serving.bytes_to_pixels(self.image_shape, (self.card or
                                                           {}).get("eval_crop_fraction"))
    pixels = tf.map_fn(to_pixels,
                       images,
                       fn_output_signature=tf.TensorSpec(self.image_shape, tf.uint8))
    return self._pixels_signature(images=pixels)

  @property
  def label_names(self):
    return (self.card or {}).get("label_names")

  @property
  def max_pixels(self):
    """The training run's dataset.max_image_pixels (files declaring more are refused)."""
    dataset = ((self.card or {}).get("config") or {}).get("dataset") or {}
    return dataset.get("max_image_pixels") or images.DEFAULT_MAX_PIXELS


class FilePredictor(Predictor):
  """A LiteRT or ONNX file launch.export wrote beside an export version: run by its own
  runtime, files decoded as that version's serving_bytes would, classes from its card."""

  def __init__(self, path):  # pylint: disable=super-init-not-called  (no SavedModel)
    if not storage.exists(path):
      raise UserError(f"--model={path}: no such file.")
    self.export_dir, self.name = storage.dirname(path), path
    self.card = serving.read_card(self.export_dir)
    if not self.card:
      raise UserError(f"--model={path}: no model_card.json beside it (launch.export writes "
                      "its files into an export version, whose card names the classes).")
    self.image_shape = tuple(self.card["input"]["shape"][1:])
    with storage.local_copy(path) as local:
      try:
        run = runtimes.load(local)
      except Exception as e:  # pylint: disable=broad-except  (each runtime's own errors)
        raise UserError(f"--model={path} cannot be loaded by its runtime: "
                        f"{type(e).__name__}: {first_line(e)}") from e
    self._pixels_signature = lambda images: {"probabilities": tf.constant(run(images.numpy()))}
    self._bytes_signature = self._decode_then_pixels


def _in_batches(count, classify):
  outputs = []
  countdown = progress.Countdown("Classifying", count, "images")
  for start in range(0, count, BATCH):
    outputs.append(classify(start, start + BATCH))
    countdown.update(min(start + BATCH, count))
  return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def _uint8_images_signature(loaded):
  """(signature, input spec) of the export's uint8-image signature, or (None, None)."""
  for name in ("serving_default", "serving_images"):
    signature = loaded.signatures.get(name)
    spec = signature and signature.structured_input_signature[1].get(serving.INPUT_NAME)
    if spec is not None and spec.dtype == tf.uint8:
      return signature, spec
  return None, None


def find_export(path):
  """The served SavedModel of a workdir, of an export/ directory, or the version named."""
  for candidate in (storage.join(path, "export"), path):
    export = current_export(candidate)
    if export:
      return export
  raise UserError(f"No SavedModel at {path}, in {storage.join(path, 'export')} or in a "
                  "numbered version under either. Pass a workdir of launch.train, its "
                  "export/ directory or one of its versions (export/1) with --model.")


def image_files(paths):
  """The files named, and the files inside the directories named (sorted)."""
  files = []
  for path in paths:
    if storage.isdir(path):
      files += sorted(
          storage.join(path, name)
          for name in storage.listdir(path)
          if not storage.isdir(storage.join(path, name)))
    else:
      files.append(path)
  return files


def read_files(paths, max_pixels):
  """(sources, their bytes) of the image files named or inside the directories named.

  Each file's header and end are checked first (images.check_file), so a decompression
  bomb, a cut file or another format is refused, with a line saying why, before it is
  read whole. Decoding is the export's (Predictor.classify_files).
  """
  sources, encoded = [], []
  for path in image_files(paths):
    problem, _ = images.check_file(path, max_pixels)
    if problem:
      logging.error("%s: %s; skipped", path, problem)
      continue
    with tf.io.gfile.GFile(path, "rb") as f:
      encoded.append(f.read())
    sources.append(path)
  if not sources:
    raise UserError(f"None of {', '.join(paths)} could be read as an image (see the lines "
                    "above). Pass PNG, JPEG, GIF or BMP files, or directories of them.")
  return sources, encoded


def split_images(workdir_root, split, limit=None, flag="--split"):
  """(sources, uint8 images, labels) of `split` of the run's own dataset (its first
  `limit` images, if given), as evaluation prepares them."""
  from kmodels.tools import evaluation  # pylint: disable=g-import-not-at-top  (imports Keras models)
  from kmodels.workdir import Workdir  # pylint: disable=g-import-not-at-top
  config = evaluation.load_config(Workdir(workdir_root))
  datasets = data.load_split(config, split, flag)
  batches, count = [], 0
  for batch in datasets.eval.as_numpy_iterator():
    batches.append(batch)
    count += len(batch[1])
    if limit is not None and count >= limit:
      break
  # The eval pipeline scales pixels to [0, 1]; the export takes them as they were.
  images = np.round(np.concatenate([x for x, _ in batches]) * 255).astype(np.uint8)[:limit]
  labels = np.concatenate([y for _, y in batches])[:limit]
  return [f"{split}#{i}" for i in range(len(images))], images, labels


def top_k_rows(sources, probabilities, label_names, k, labels=None):
  """One dict per image: its source, the k best classes with probabilities, its label."""
  names = label_names or [str(i) for i in range(probabilities.shape[-1])]
  rows = []
  for i, (source, row) in enumerate(zip(sources, probabilities)):
    best = np.argsort(-row)[:k]
    entry = {
        "source":
            source,
        "top_k": [{
            "class": names[c],
            "class_id": int(c),
            "probability": float(row[c])
        } for c in best]
    }
    if labels is not None:
      entry["label"] = names[int(labels[i])]
    rows.append(entry)
  return rows


def format_row(row):
  ranked = "  ".join(
      f"{r + 1}. {p['class']} {p['probability']:.4f}" for r, p in enumerate(row["top_k"]))
  label = f"  (label: {row['label']})" if "label" in row else ""
  return f"{row['source']}: {ranked}{label}"


def write_rows(rows, path):
  """rows as JSON (.json) or CSV (.csv: one line per image and rank)."""
  extension = os.path.splitext(path)[1].lower()
  if extension == ".json":
    storage.write_atomic(path, json.dumps(rows, indent=2) + "\n")
  elif extension == ".csv":
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["source", "rank", "class", "class_id", "probability", "label"])
    for row in rows:
      for rank, p in enumerate(row["top_k"], 1):
        writer.writerow([
            row["source"], rank, p["class"], p["class_id"], f"{p['probability']:.6f}",
            row.get("label", "")
        ])
    storage.write_atomic(path, text.getvalue())
  else:
    raise UserError(f"--output={path}: name a .csv or a .json file.")
