"""Images of any size to the model's N x N: decoding, the standard crops, header checks.

TensorFlow ops, used by the input pipelines and by the serving export alike, so that a
served prediction sees exactly the pixels evaluation saw:

  training    random-resized crop (a random area and aspect ratio of the image), resized
              to N x N, random horizontal flip; JPEGs decode only the crop window.
  evaluation  the centre square holding `eval_fraction` of the shorter side, resized to
              N x N (the "resize 256, crop 224" of ImageNet models, as one crop).
  (The crop policies `resize` and `square` use one deterministic transform for both:
  crop_policy says which runs get which.)

Everything stays uint8 up to the resize, which returns uint8 again (rounded), so caches,
batches and the affine warp handle 1 byte per channel; floats appear only in the model.

`check_header` is the Python side: what is wrong with a file judged from its header and
its last bytes alone (empty, not an image, a format TF can't decode, a pixel count over the
limit, truncated), without decoding it. Image folders and `launch.predict` both use it.
"""

import io
from typing import Optional, Tuple

import tensorflow as tf

from kmodels.errors import first_line

# Formats tf.io.decode_image reads (PIL's names for them).
DECODABLE_FORMATS = ("JPEG", "PNG", "GIF", "BMP")
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Files declaring more pixels are refused unread: 100 M is far above any photo (a 48 MP
# camera gives 48 M) and its decoded RGB (300 MB) still fits in memory.
DEFAULT_MAX_PIXELS = 100_000_000


def decode(encoded, channels):
  """uint8 [H, W, channels] of an encoded JPEG/PNG/GIF/BMP (first frame of a GIF).

  Grayscale, RGB and RGBA files all become `channels` (1 or 3): grey is repeated into RGB,
  alpha dropped, RGB turned grey. GIFs decode to RGB only, so they are converted after.
  """
  image = tf.io.decode_image(encoded, channels=0, expand_animations=False)
  image.set_shape([None, None, None])
  return to_channels(image, channels)


def to_channels(image, channels):
  """uint8 [H, W, c] with c in 1..4 -> [H, W, channels] (channels 1 or 3)."""
  have = tf.shape(image)[-1]
  rgb = tf.cond(have >= 3, lambda: image[..., :3], lambda: tf.tile(image[..., :1], [1, 1, 3]))
  if channels == 3:
    return rgb
  grey = tf.image.rgb_to_grayscale(rgb)
  return tf.cond(have >= 3, lambda: grey, lambda: image[..., :1])


def _decode_window(encoded, window_of_shape, channels):
  """Decodes only `window_of_shape(height, width)` = (top, left, h, w) of the image.

  For a JPEG that is libjpeg's own cropped decode (less work the smaller the window); other
  formats decode whole, then crop.
  """

  def jpeg():
    shape = tf.image.extract_jpeg_shape(encoded)
    window = window_of_shape(shape[0], shape[1])
    decoded = tf.image.decode_and_crop_jpeg(encoded, tf.stack(window), channels=0)
    return to_channels(decoded, channels)

  def other():
    image = decode(encoded, channels)
    top, left, height, width = window_of_shape(tf.shape(image)[0], tf.shape(image)[1])
    return image[top:top + height, left:left + width]

  image = tf.cond(tf.io.is_jpeg(encoded), jpeg, other)
  image.set_shape([None, None, channels])
  return image


def _crop_decoded(image, window_of_shape):
  top, left, height, width = window_of_shape(tf.shape(image)[0], tf.shape(image)[1])
  return image[top:top + height, left:left + width]


def resize(image, size, antialias=True):
  """uint8 [size, size, C] (bilinear, rounded back to uint8).

  antialias: filter when shrinking (a cleaner image, but the whole training transform of
  a 500x375 JPEG to 224 ran at 767 instead of 1407 images/s with it: measurements.md
  "Image pipeline").
  """
  resized = tf.image.resize(image, [size, size], method="bilinear", antialias=antialias)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def whole_window(height, width):
  """window_of_shape for the whole image."""
  return tf.constant(0), tf.constant(0), height, width


def center_window(fraction):
  """window_of_shape for the centred square of `fraction` x the shorter side."""

  def window(height, width):
    side = tf.cast(fraction * tf.cast(tf.minimum(height, width), tf.float32), tf.int32)
    side = tf.maximum(side, 1)
    return [(height - side) // 2, (width - side) // 2, side, side]

  return window


def random_window(seed, area_range, aspect_ratio_range):
  """window_of_shape for a random-resized crop, as Inception/ResNet training draws it."""

  def window(height, width):
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.stack([height, width, 1]),
        bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=list(aspect_ratio_range),
        area_range=list(area_range),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True)
    return [begin[0], begin[1], size[0], size[1]]

  return window


def _windowed(image, window_of_shape, channels):
  if image.dtype == tf.string:
    return _decode_window(image, window_of_shape, channels)
  return _crop_decoded(to_channels(image, channels), window_of_shape)


# dataset.crop.policy=auto picks the ImageNet recipe for images from this side up, in runs
# of at least this many epochs (ImageNet's recipes run 90; its crops pay off over length).
IMAGENET_POLICY_MIN_SIZE = 128
IMAGENET_POLICY_MIN_EPOCHS = 30
CROP_POLICIES = ("auto", "imagenet", "square", "resize")


def crop_policy(dataset_config, epochs=None):
  """The crop policy a run uses: dataset.crop.policy with `auto` resolved by image size and
  run length (`epochs`; None: by size alone, for pipelines without a run).

  imagenet: random-resized crops (dataset.crop.area, .aspect_ratio) and random flips for
            training, the centre dataset.crop.eval_fraction for evaluation: right for
            photos at ImageNet sizes over ImageNet-length runs;
  resize:   the whole image resized to N x N (its aspect ratio given up), for training
            and evaluation alike, no flip: what Keras' image_dataset_from_directory does
            by default, and what `auto` picks for small images and short runs. No flip also
            keeps anything with a handedness (digits, text) as it is;
  square:   the largest centre square resized, train and evaluation alike, no flip (keeps
            the aspect ratio, loses the sides).
  Measured (README "Against plain Keras"): ShallowNet, 3 epochs of 6,000 pictures of mixed
  sizes at 32 px: ImageNet's crops 73.6 %, square 82.3 %, plain Keras 85.2 %.
  """
  policy = dataset_config.crop.policy
  if policy != "auto":
    return policy
  large = (dataset_config.image_size or 0) >= IMAGENET_POLICY_MIN_SIZE
  long_run = epochs is None or epochs >= IMAGENET_POLICY_MIN_EPOCHS
  return "imagenet" if large and long_run else "resize"


def train_image(image, size, crop, channels, seed, policy="imagenet"):
  """Training pixels of one image: random-resized crop to size x size and random flip
  (policy imagenet), the centre square resized (square) or the whole image (resize).

  `image`: encoded bytes or uint8 [H, W, C]; `crop`: config.dataset.crop; `seed`: a
  stateless seed [2] (the run's seed and the example's position: reruns repeat it).
  """
  if policy in ("square", "resize"):
    return eval_image(image, size, EVAL_CROP_FRACTION[policy], channels)
  seeds = tf.random.experimental.stateless_split(seed, num=2)
  window = random_window(seeds[0], crop.area, crop.aspect_ratio)
  # Plain bilinear, as Inception/ResNet training crops are resized: a random crop's
  # aliasing is one more augmentation, and the filter would cost more than the decode.
  image = resize(_windowed(image, window, channels), size, antialias=False)
  return tf.image.stateless_random_flip_left_right(image, seeds[1])


# The evaluation crop of the deterministic policies: the whole image (None) or the centre
# square (1.0 of the shorter side).
EVAL_CROP_FRACTION = {"resize": None, "square": 1.0}


def eval_image(image, size, crop_fraction, channels):
  """Evaluation (and serving) pixels of one image: the centre crop of `crop_fraction` x the
  shorter side (None: the whole image) resized to size x size, antialiased (one pass per
  image, and what a served photo gets too)."""
  window = whole_window if crop_fraction is None else center_window(crop_fraction)
  return resize(_windowed(image, window, channels), size)


# --------------------------------------------------------------------------- file checks

HEAD_BYTES = 1 << 16  # enough for the header of every format above, most of the time
TAIL_BYTES = 16


def check_header(read, size_bytes, max_pixels) -> Tuple[Optional[str], int]:
  """(What is wrong with an image file, or None; its pixel count), without decoding it.

  Args:
    read: read(offset, length) -> bytes of the file (length None: to the end).
    size_bytes: the file's size.
    max_pixels: width x height above which the file is refused (a decompression bomb
      declares a huge size in a tiny file).
  """
  if size_bytes == 0:
    return "empty file (0 bytes)", 0
  head = read(0, HEAD_BYTES)
  header = _read_header(head)
  if isinstance(header, str) and len(head) < size_bytes:
    header = _read_header(read(0, None))  # a header past HEAD_BYTES (large EXIF blocks)
  if isinstance(header, str):
    return header, 0
  width, height, kind = header
  if kind not in DECODABLE_FORMATS:
    return f"a {kind} image; TensorFlow decodes {', '.join(DECODABLE_FORMATS)} only", 0
  if width * height > max_pixels:
    return (f"declares {width}x{height} = {width * height:,} pixels, over the limit of "
            f"{max_pixels:,} (dataset.max_image_pixels; a decompression bomb looks like this)"), 0
  tail = head[-TAIL_BYTES:] if size_bytes <= HEAD_BYTES else read(size_bytes -
                                                                  TAIL_BYTES, TAIL_BYTES)
  if not _ends_whole(kind, tail, size_bytes, head):
    return f"truncated {kind} (its end marker is missing: the file was cut short)", 0
  return None, width * height


def _read_header(data):
  """(width, height, format) from PIL's header parse, or the problem as a string."""
  from PIL import Image, UnidentifiedImageError  # pylint: disable=g-import-not-at-top
  saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # our limit applies, not PIL's
  try:
    image = Image.open(io.BytesIO(data))
    return image.width, image.height, image.format
  except UnidentifiedImageError:
    return ("not an image kmodels can read (no JPEG, PNG, GIF or BMP header it can "
            "parse: not an image, or a damaged one)")
  except (OSError, ValueError, SyntaxError, EOFError) as e:
    return f"not an image kmodels can read ({type(e).__name__}: {first_line(e)})"
  finally:
    Image.MAX_IMAGE_PIXELS = saved


def _ends_whole(kind, tail, size_bytes, head):
  """Whether the file ends as a complete file of its format does."""
  if kind == "JPEG":  # the EOI marker; some writers pad after it
    return tail.rstrip(b"\x00\r\n ").endswith(b"\xff\xd9")
  if kind == "PNG":  # the IEND chunk (and its CRC) closes every PNG
    return b"IEND" in tail
  if kind == "GIF":  # the trailer byte
    return tail.rstrip(b"\x00").endswith(b"\x3b")
  if kind == "BMP":  # the file size its header declares
    declared = int.from_bytes(head[2:6], "little")
    return size_bytes >= declared
  return True


def check_file(path, max_pixels, size_bytes=None) -> Tuple[Optional[str], int]:
  """check_header of the file at `path` (local or gs://); unreadable files say so."""

  def read(offset, length):
    with tf.io.gfile.GFile(path, "rb") as f:
      f.seek(offset)
      return f.read(length if length is not None else -1)

  try:
    size_bytes = tf.io.gfile.stat(path).length if size_bytes is None else size_bytes
    return check_header(read, size_bytes, max_pixels)
  except (OSError, tf.errors.OpError) as e:
    return f"could not be read ({type(e).__name__}: {first_line(e)})", 0
