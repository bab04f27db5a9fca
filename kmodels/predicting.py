"""Classifies image files, or a split of a run's dataset, with a run's serving export.

Everything goes through the export's uint8-image signature (`serving_default`, or
`serving_images` in an Estimator migrated by launch.migrate), the same one any other client
calls, so what `launch.predict` prints is what a server says.
"""

import csv
import io
import json
import os

from absl import logging
import numpy as np
import tensorflow as tf

from kmodels import data, images, serving, storage
from kmodels.errors import UserError, first_line

BATCH = 256
PROGRESS_EVERY = 1000  # images between progress lines


class Predictor:
  """A loaded export: its input shape, its label names, and a batch classifier."""

  def __init__(self, path):
    self.export_dir = find_export(path)
    self.card = serving.read_card(self.export_dir)
    loaded = serving.load_export(self.export_dir)
    self._signature, spec = _uint8_images_signature(loaded)
    if spec is None:
      raise UserError(f"{self.export_dir} has no signature taking uint8 `images` (a kmodels "
                      "export's serving_default does). A migrated Estimator that was not "
                      "trained by kmodels takes its own features: call its serving_default "
                      "with saved_model_cli or TF Serving. Exports made before kmodels "
                      "0.1.0: run the same launch.train command again to re-export.")
    self.image_shape = tuple(spec.shape[1:])
    self._loaded = loaded  # keeps the signature's variables alive

  def probabilities(self, pixels):
    """float32 [N, classes] for uint8 images [N, H, W, C], in batches, with progress."""
    outputs = []
    for start in range(0, len(pixels), BATCH):
      batch = tf.constant(pixels[start:start + BATCH])
      outputs.append(self._signature(images=batch)["probabilities"].numpy())
      done = min(start + BATCH, len(pixels))
      if len(pixels) > PROGRESS_EVERY and (done // BATCH) % (PROGRESS_EVERY // BATCH) == 0:
        logging.info("Predicted %d/%d images.", done, len(pixels))
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)

  @property
  def label_names(self):
    return (self.card or {}).get("label_names")

  @property
  def max_pixels(self):
    """The training run's dataset.max_image_pixels (files declaring more are refused)."""
    dataset = ((self.card or {}).get("config") or {}).get("dataset") or {}
    return dataset.get("max_image_pixels") or images.DEFAULT_MAX_PIXELS


def _uint8_images_signature(loaded):
  """(signature, input spec) of the export's uint8-image signature, or (None, None)."""
  for name in ("serving_default", "serving_images"):
    signature = loaded.signatures.get(name)
    spec = signature and signature.structured_input_signature[1].get(serving.INPUT_NAME)
    if spec is not None and spec.dtype == tf.uint8:
      return signature, spec
  return None, None


def find_export(path):
  """WORKDIR/export or the export directory itself."""
  for candidate in (storage.join(path, "export"), path):
    if storage.exists(storage.join(candidate, "saved_model.pb")):
      return candidate
  raise UserError(f"No SavedModel at {path} or {storage.join(path, 'export')}. Pass a "
                  "workdir of launch.train or its export/ directory with --model.")


def image_files(paths):
  """The files named, and the files inside the directories named (sorted)."""
  files = []
  for path in paths:
    if storage.isdir(path):
      files += sorted(storage.join(path, name) for name in storage.listdir(path)
                      if not storage.isdir(storage.join(path, name)))
    else:
      files.append(path)
  return files


def read_image(path, image_shape, max_pixels):
  """uint8 [H, W, C] of the file, converted to `image_shape`; and a note if it was.

  The file's header and end are checked first (images.check_file), so a decompression
  bomb or a cut file is refused before anything is decoded.
  """
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  height, width, channels = image_shape
  problem, _ = images.check_file(path, max_pixels)
  if problem:
    raise ValueError(f"{path}: {problem}; skipped")
  try:
    with tf.io.gfile.GFile(path, "rb") as f:
      image = Image.open(io.BytesIO(f.read()))
      image.load()
  except (UnidentifiedImageError, OSError, tf.errors.OpError) as e:
    raise ValueError(f"{path}: not an image this can read ({type(e).__name__}: "
                     f"{first_line(e)})") from e
  before = f"{image.width}x{image.height} {image.mode}"
  mode = "L" if channels == 1 else "RGB"
  converted = image.convert(mode) if image.mode != mode else image
  if converted.size != (width, height):
    converted = converted.resize((width, height), Image.Resampling.BILINEAR)
  after = f"{width}x{height} {mode}"
  note = f"converted {path}: {before} -> {after}" if before != after else None
  return np.asarray(converted, dtype=np.uint8).reshape(image_shape), note


def read_images(paths, image_shape, max_pixels):
  """(sources, uint8 images); prints a line for each converted or unreadable file."""
  sources, pixels = [], []
  for path in image_files(paths):
    try:
      image, note = read_image(path, image_shape, max_pixels)
    except ValueError as e:
      logging.error("%s", e)
      continue
    if note:
      logging.info("%s", note)
    sources.append(path)
    pixels.append(image)
  if not sources:
    raise UserError(f"None of {', '.join(paths)} could be read as an image (see the lines "
                    "above). Pass PNG, JPEG, GIF or BMP files, or directories of them.")
  return sources, np.stack(pixels)


def split_images(workdir_root, split):
  """(sources, uint8 images, labels) of `split` of the run's own dataset."""
  from kmodels import evaluation  # pylint: disable=g-import-not-at-top  (imports Keras models)
  from kmodels.workdir import Workdir  # pylint: disable=g-import-not-at-top
  config = evaluation.load_config(Workdir(workdir_root))
  datasets = data.load_split(config, split, "--split")
  batches = list(datasets.eval.as_numpy_iterator())
  # The eval pipeline scales pixels to [0, 1]; the export takes them as they were.
  images = np.round(np.concatenate([x for x, _ in batches]) * 255).astype(np.uint8)
  labels = np.concatenate([y for _, y in batches])
  return [f"{split}#{i}" for i in range(len(images))], images, labels


def top_k_rows(sources, probabilities, label_names, k, labels=None):
  """One dict per image: its source, the k best classes with probabilities, its label."""
  names = label_names or [str(i) for i in range(probabilities.shape[-1])]
  rows = []
  for i, (source, row) in enumerate(zip(sources, probabilities)):
    best = np.argsort(-row)[:k]
    entry = {"source": source,
             "top_k": [{"class": names[c], "class_id": int(c), "probability": float(row[c])}
                       for c in best]}
    if labels is not None:
      entry["label"] = names[int(labels[i])]
    rows.append(entry)
  return rows


def format_row(row):
  ranked = "  ".join(f"{r + 1}. {p['class']} {p['probability']:.4f}"
                     for r, p in enumerate(row["top_k"]))
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
        writer.writerow([row["source"], rank, p["class"], p["class_id"],
                         f"{p['probability']:.6f}", row.get("label", "")])
    storage.write_atomic(path, text.getvalue())
  else:
    raise UserError(f"--output={path}: name a .csv or a .json file.")
