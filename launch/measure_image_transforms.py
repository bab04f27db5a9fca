r"""Throughput of each stage of the per-example image transform, on a folder of JPEGs.

  python -m launch.measure_image_transforms --image_dir=runs/photos --size=224

Prints images/s for: decoding whole files, decoding only a random-resized crop window,
the training transform (crop + resize + flip) with and without an antialiased resize. The
numbers behind kmodels/docs/measurements.md "Image pipeline"; `launch.benchmark
--input_only` measures the whole pipeline.
"""

import time

from absl import app
from absl import flags
import ml_collections
import tensorflow as tf

from configs import base
from kmodels import cpus, storage
from kmodels.data import images
from kmodels.errors import UserError
from launch import common

_IMAGE_DIR = flags.DEFINE_string("image_dir", None, "DIR/<split>/<class>/*.jpg")
_SIZE = flags.DEFINE_integer("size", 224, "Output size of the transform.", lower_bound=1)
_IMAGES = flags.DEFINE_integer("images", 1280, "Images per measurement.", lower_bound=1)
flags.mark_flag_as_required("image_dir")


def _throughput(files, transform, count, batch=64):
  seeds = tf.data.Dataset.range(1 << 62)
  ds = tf.data.Dataset.zip((seeds, tf.data.Dataset.from_tensor_slices(files).repeat()))
  ds = ds.map(
      lambda i, path: transform(tf.io.read_file(path), tf.stack([tf.constant(1, tf.int64), i])),
      num_parallel_calls=cpus.usable_cpus()).batch(batch).prefetch(2)
  iterator = iter(ds)
  next(iterator)
  start = time.perf_counter()
  for _ in range(count // batch):
    next(iterator)
  return count // batch * batch / (time.perf_counter() - start)


def _stages(size, crop):
  decode_window = images._decode_window  # pylint: disable=protected-access

  def window(seed):
    return images.random_window(seed, crop.area, crop.aspect_ratio)

  def transform(antialias):

    def run(encoded, seed):
      cropped = decode_window(encoded, window(seed), 3)
      return tf.image.stateless_random_flip_left_right(
          images.resize(cropped, size, antialias=antialias), seed)

    return run

  return {
      "decode whole": lambda encoded, seed: tf.io.decode_jpeg(encoded, channels=3)[:1, :1],
      "decode crop window": lambda encoded, seed: decode_window(encoded, window(seed), 3)[:1, :1],
      "crop + antialiased resize + flip": transform(True),
      "crop + plain resize + flip": transform(False),
  }


def main(argv):
  common.start(argv)
  with common.user_errors_exit():
    files = sorted(tf.io.gfile.glob(storage.join(_IMAGE_DIR.value, "*", "*", "*.jpg")))
    if not files:
      raise UserError(f"--image_dir={_IMAGE_DIR.value} holds no <split>/<class>/*.jpg "
                      "files (write some with launch.write_image_folder --photo_size=...).")
  crop = ml_collections.ConfigDict(base.get_config().dataset.crop)
  print(f"{len(files)} JPEGs, {cpus.usable_cpus()} threads, {_SIZE.value} px")
  for name, transform in _stages(_SIZE.value, crop).items():
    print(f"{name:34s} {_throughput(files, transform, _IMAGES.value):8.0f} images/s", flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=common.parse_flags)
