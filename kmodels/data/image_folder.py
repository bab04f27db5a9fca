"""Your own images: DIR/<split>/<class>/*.{jpg,jpeg,png,bmp,gif}, local or on gs://.

The layout of tfds' ImageFolder and of ImageNet's training set. Class names are the sorted
folder names of the training split; a class's index is its position in that list.

Two forms train the same way (`dataset.name=image_folder`, `dataset.image_dir=DIR`):
  files    DIR as above; every file's header and end are checked when a run starts, and
           the bad ones named, skipped and counted;
  records  what `python -m launch.prepare_data --dataset=image_folder --image_dir=DIR
           --data_dir=D` writes: TFRecord shards of the good files' bytes and an index
           (RECORDS_INDEX) holding the classes and counts. Few large files instead of
           many small ones: the fast form on a bucket, and checked once instead of per run.
"""

import concurrent.futures
import io
import json
import math
import typing

from absl import logging
import numpy as np
import tensorflow as tf

from kmodels import cpus, progress, storage
from kmodels.data import images
from kmodels.errors import UserError

RECORDS_INDEX = "kmodels_records.json"
RECORDS_FORMAT = "kmodels image records 1"
IMAGES_PER_SHARD = 1024  # ~100 MB of ImageNet JPEGs: enough shards to shard by file
BAD_FILES_LOGGED = 50


class Split(typing.NamedTuple):
  """One split of an image folder, after its files were checked."""
  paths: typing.List[str]  # good files (files form) or record shards (records form)
  labels: typing.List[int]  # per good file; empty for records
  examples: int
  bad: typing.List[typing.Tuple[str, str]]  # (path, what is wrong)
  decoded_bytes: int  # uint8 bytes of every good image decoded at its own size


class Folder(typing.NamedTuple):
  root: str
  classes: typing.List[str]
  is_records: bool


def _is_image_name(name):
  return name.lower().endswith(images.EXTENSIONS)


def open_folder(image_dir, train_split):
  """The Folder at `image_dir` (files or records form), or a UserError saying what is off."""
  if not image_dir:
    raise UserError("dataset.name=image_folder needs dataset.image_dir: a directory laid out "
                    "as DIR/<split>/<class>/*.jpg (--config.dataset.image_dir=DIR).")
  storage.check_reachable(image_dir, "dataset.image_dir")
  root = storage.absolute(image_dir)
  if storage.exists(storage.join(root, RECORDS_INDEX)):
    index = _read_index(root)
    _check_classes(index["classes"], root)
    return Folder(root, index["classes"], True)
  if not storage.isdir(root):
    raise UserError(f"dataset.image_dir {root} is not a directory. It must be laid out as "
                    "DIR/<split>/<class>/*.jpg (e.g. DIR/train/cat/1.jpg).")
  split_dir = storage.join(root, train_split)
  if not storage.isdir(split_dir):
    raise UserError(_missing_split(root, train_split, "dataset.train_split"))
  classes = sorted(
      n.rstrip("/")
      for n in storage.listdir(split_dir)
      if storage.isdir(storage.join(split_dir, n.rstrip("/"))))
  if not classes:
    raise UserError(f"{split_dir} holds no class folders. Put each class's images in a "
                    f"folder of its own: {split_dir}/<class>/*.jpg.")
  _check_classes(classes, split_dir)
  return Folder(root, classes, False)


def _check_classes(classes, where):
  """A classifier of one class learns nothing and scores 100 %: refused."""
  if len(classes) < 2:
    raise UserError(f"{where} has one class folder ({classes[0]!r}); a classifier needs at "
                    f"least two: put each class's images in a folder of its own "
                    f"({where}/<class>/*.jpg).")


def _missing_split(root, split, key):
  found = sorted(n.rstrip("/") for n in storage.listdir(root)) if storage.isdir(root) else []
  return (f"{root} has no {split!r} split folder ({key}={split!r}); it has: "
          f"{', '.join(found) or 'nothing'}. Expected DIR/<split>/<class>/*.jpg, or set "
          f"{key} to one of those folders.")


def _read_index(root):
  path = storage.join(root, RECORDS_INDEX)
  try:
    index = json.loads(storage.read_text(path))
  except (ValueError, tf.errors.OpError) as e:
    raise UserError(f"{path} is damaged ({type(e).__name__}): prepare the records again "
                    "with launch.prepare_data --dataset=image_folder.") from e
  if index.get("format") != RECORDS_FORMAT:
    raise UserError(f"{path} is not a kmodels records index (format "
                    f"{index.get('format')!r}, expected {RECORDS_FORMAT!r}).")
  return index


def _list_files(split_dir, classes):
  """[(path, class index)] of image files, sorted; a UserError for an empty class."""
  files = []
  present = set(n.rstrip("/") for n in storage.listdir(split_dir))
  unknown = sorted(
      n for n in present if storage.isdir(storage.join(split_dir, n)) and n not in classes)
  if unknown:
    raise UserError(f"{split_dir} has class folders the training split lacks: "
                    f"{', '.join(unknown[:10])}. Every split must use the training split's "
                    f"classes ({len(classes)}).")
  for label, name in enumerate(classes):
    if name not in present:
      continue  # an evaluation split may lack a class
    class_dir = storage.join(split_dir, name)
    names = sorted(n for n in storage.listdir(class_dir) if _is_image_name(n))
    if not names:
      raise UserError(f"Class folder {class_dir} holds no images (*{', *'.join(images.EXTENSIONS)}"
                      "). Add images or remove the folder.")
    files += [(storage.join(class_dir, n), label) for n in names]
  return files


def check_files(paths, max_pixels, what):
  """[(problem or None, pixels)] per path: headers and ends read in parallel threads."""
  threads = 32 if any(storage.has_scheme(p) for p in paths[:1]) else 4 * cpus.usable_cpus()
  results = []
  countdown = progress.Countdown(f"Checking the files of {what}", len(paths), "files")
  with concurrent.futures.ThreadPoolExecutor(threads) as pool:
    for done, result in enumerate(pool.map(lambda p: images.check_file(p, max_pixels), paths), 1):
      results.append(result)
      countdown.update(done)
  return results


def scan_split(folder, split, dataset_config, channels):
  """The Split `split` of a files-form folder, bad files named in the log and skipped."""
  split_dir = storage.join(folder.root, split)
  if not storage.isdir(split_dir):
    key = "dataset.train_split" if split == dataset_config.train_split else "dataset.eval_split"
    raise UserError(_missing_split(folder.root, split, key))
  files = _list_files(split_dir, folder.classes)
  if not files:
    raise UserError(f"{split_dir} holds no images. Expected {split_dir}/<class>/*.jpg.")
  checked = check_files([p for p, _ in files], dataset_config.max_image_pixels,
                        f"{folder.root} split {split!r}")
  good = [(f, pixels) for f, (problem, pixels) in zip(files, checked) if problem is None]
  bad = [(f[0], problem) for f, (problem, _) in zip(files, checked) if problem]
  report_bad_files(bad, len(files), f"{folder.root} split {split!r}",
                   dataset_config.max_bad_fraction)
  return Split([p for (p, _), _ in good], [label for (_, label), _ in good], len(good), bad,
               sum(pixels for _, pixels in good) * channels)


def report_bad_files(bad, total, what, max_bad_fraction):
  """Names each bad file in the log; a UserError when more than the allowed share are bad."""
  for path, problem in bad[:BAD_FILES_LOGGED]:
    logging.warning("Skipping %s: %s.", path, problem)
  if len(bad) > BAD_FILES_LOGGED:
    logging.warning("... and %d more unreadable files.", len(bad) - BAD_FILES_LOGGED)
  if bad:
    logging.warning("%s: %d of %d files are unreadable and skipped.", what, len(bad), total)
  if len(bad) > max_bad_fraction * total or len(bad) == total:
    first = "; ".join(f"{storage.basename(p)}: {problem}" for p, problem in bad[:3])
    raise UserError(f"{what}: {len(bad)} of {total} files are unreadable ({first}), more "
                    f"than dataset.max_bad_fraction={max_bad_fraction} allows. Fix or remove "
                    "them, or raise --config.dataset.max_bad_fraction.")


def records_split(folder, split, dataset_config):
  """The Split `split` of a records-form folder (its shards and the index's counts)."""
  index = _read_index(folder.root)
  if split not in index["splits"]:
    key = "dataset.train_split" if split == dataset_config.train_split else "dataset.eval_split"
    raise UserError(f"The records in {folder.root} have no split {split!r} ({key}); they "
                    f"have: {', '.join(sorted(index['splits']))}.")
  entry = index["splits"][split]
  shards = [storage.join(folder.root, name) for name in entry["files"]]
  return Split(shards, [], entry["examples"], [("", "")] * entry["bad_files"],
               entry["decoded_bytes"])


def read_split(folder, split, dataset_config, channels):
  if folder.is_records:
    return records_split(folder, split, dataset_config)
  return scan_split(folder, split, dataset_config, channels)


# --------------------------------------------------------------------------- records

_FEATURES = {
    "image": tf.io.FixedLenFeature([], tf.string),
    "label": tf.io.FixedLenFeature([], tf.int64)
}


def parse_record(record):
  """(encoded image bytes, label) of one record."""
  example = tf.io.parse_single_example(record, _FEATURES)
  return example["image"], example["label"]


def _example(encoded, label):
  return tf.train.Example(features=tf.train.Features(
      feature={
          "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[encoded])),
          "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))
      })).SerializeToString()


def _read_bytes(path):
  with tf.io.gfile.GFile(path, "rb") as f:
    return f.read()


def write_records(image_dir,
                  data_dir,
                  dataset_config,
                  splits=None,
                  images_per_shard=IMAGES_PER_SHARD):
  """Writes the good files of each split of `image_dir` as TFRecord shards in `data_dir`.

  Returns the index written to data_dir/RECORDS_INDEX. Files are written in a seeded
  random order (classes mixed across shards, so sharding by file gives every worker
  every class).
  """
  folder = open_folder(image_dir, dataset_config.train_split)
  if folder.is_records:
    raise UserError(f"{image_dir} already holds records; pass the image folder itself.")
  storage.makedirs(data_dir)
  splits = splits or sorted(
      n.rstrip("/")
      for n in storage.listdir(folder.root)
      if storage.isdir(storage.join(folder.root, n.rstrip("/"))))
  index = {"format": RECORDS_FORMAT, "source": folder.root, "classes": folder.classes, "splits": {}}
  channels = dataset_config.channels or 3
  for split in splits:
    scanned = scan_split(folder, split, dataset_config, channels)
    order = np.random.default_rng(0).permutation(scanned.examples)
    shard_count = max(1, math.ceil(scanned.examples / images_per_shard))
    names = [f"{split}.tfrecord-{i:05d}-of-{shard_count:05d}" for i in range(shard_count)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
      for shard, name in enumerate(names):
        chosen = order[shard::shard_count]
        payloads = pool.map(_read_bytes, [scanned.paths[i] for i in chosen])
        with tf.io.TFRecordWriter(storage.join(data_dir, name)) as writer:
          for i, payload in zip(chosen, payloads):
            writer.write(_example(payload, scanned.labels[i]))
        logging.info("Wrote %s (%d images).", name, len(chosen))
    index["splits"][split] = {
        "files": names,
        "examples": scanned.examples,
        "bad_files": len(scanned.bad),
        "decoded_bytes": scanned.decoded_bytes
    }
  storage.write_atomic(storage.join(data_dir, RECORDS_INDEX), json.dumps(index, indent=2))
  return index


# --------------------------------------------------------------------------- writing folders

_FORMATS = (("JPEG", ".jpg"), ("PNG", ".png"))
_MODES = ("L", "RGB", "RGBA")

# Camera-like grain added to upscaled images (`photo_size`): without it a 28 px image blown
# up to 500x375 compresses to ~20 kB, far below a photo's ~110 kB, and decodes faster
# (16: ~75 kB at 500x375, JPEG quality 90).
_PHOTO_GRAIN_STDDEV = 16.0


def _as_photo(image, photo_size, rng):
  """`image` resized to photo_size (width, height) in RGB with grain: ImageNet-like JPEGs."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  pixels = np.asarray(image.convert("RGB").resize(photo_size, Image.Resampling.BICUBIC), np.float32)
  pixels += rng.normal(0.0, _PHOTO_GRAIN_STDDEV, pixels.shape)
  return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_images(examples, root, split, class_names, mixed=False, seed=0, photo_size=None):
  """Writes (uint8 [H, W, C], label) examples as root/split/<class>/<i>.{jpg,png}.

  With `mixed`, each file gets its own size (0.75x to 3x, aspect ratio varied), colour mode
  (grey, RGB, RGBA) and format (JPEG or PNG), as a folder of real photos would. With
  `photo_size` (width, height), every file is an RGB JPEG of that size with camera-like
  grain (ImageNet's photos average about 500x375). Returns the number of files written.
  """
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  # A class name is one folder: "T-shirt/top" becomes "T-shirt_top".
  class_names = [name.replace("/", "_") for name in class_names]
  for name in class_names:
    storage.makedirs(storage.join(root, split, name))
  count = 0
  for count, (pixels, label) in enumerate(examples, 1):
    image = Image.fromarray(pixels.squeeze(-1) if pixels.shape[-1] == 1 else pixels)
    kind, extension = _FORMATS[count % 2] if mixed else _FORMATS[0]
    if mixed:
      scale = rng.uniform(0.75, 3.0)
      size = (max(8, round(image.width * scale * rng.uniform(0.8, 1.25))),
              max(8, round(image.height * scale)))
      image = image.convert(_MODES[count % 3]).resize(size, Image.Resampling.BILINEAR)
    if photo_size:
      kind, extension, image = "JPEG", ".jpg", _as_photo(image, photo_size, rng)
    if kind == "JPEG" and image.mode == "RGBA":
      image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **({"quality": 90} if kind == "JPEG" else {}))
    path = storage.join(root, split, class_names[int(label)], f"{count:07d}{extension}")
    with tf.io.gfile.GFile(path, "wb") as f:
      f.write(buffer.getvalue())
  return count
