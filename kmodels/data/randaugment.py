"""RandAugment (Cubuk et al. 2019) on whole training batches: each image gets
`dataset.augment.randaugment_ops` operations drawn at random from OPS, all at one
magnitude (`randaugment_magnitude`, 0-10: the share of each operation's strongest form).

Vectorized over the batch: per layer, every image draws its operation and sign; the
geometric operations become one affine warp of the batch (identity for images that drew
another), and each colour operation is computed for the batch and kept where drawn. The
colour operations compute what PIL's ImageOps / ImageEnhance compute (tests compare), on
float pixels in [0, 255]; magnitudes grow with the setting for every operation (timm's
"increasing" variants). Stateless draws from the batch's seed: a resumed run augments as
the unbroken one.
"""

import math

import tensorflow as tf

from kmodels.data import augmentation

MAX_MAGNITUDE = 10

# Each operation's strongest form (at magnitude 10), as RandAugment's ImageNet policy.
MAX_ROTATE_DEGREES = 30.0
MAX_SHEAR = 0.3  # shear factor (x' = x + shear * y)
MAX_TRANSLATE = 0.45  # share of the image's side
MAX_ENHANCE = 0.9  # colour, contrast, brightness, sharpness: factor 1 +- 0.9
MAX_POSTERIZE_BITS_REMOVED = 4  # keeps 4 of 8 bits
# Solarize inverts pixels from 256 x (1 - m) up: all of them at magnitude 10.

GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
COLOUR = ("identity", "autocontrast", "equalize", "solarize", "posterize", "color", "contrast",
          "brightness", "sharpness")
OPS = GEOMETRIC + COLOUR


def affine_rows(op, strength, height, width):
  """[B, 8] transforms (output pixel -> input pixel) about the image centre: rotate,
  shear or translate by `strength` (signed share of the strongest form) where `op` names
  it, identity elsewhere."""
  zeros = tf.zeros_like(strength)

  def where(name, value, otherwise):
    return tf.where(tf.equal(op, OPS.index(name)), value, otherwise)

  angle = where("rotate", strength * MAX_ROTATE_DEGREES * math.pi / 180, zeros)
  shear_x = where("shear_x", strength * MAX_SHEAR, zeros)
  shear_y = where("shear_y", strength * MAX_SHEAR, zeros)
  shift_x = where("translate_x", strength * MAX_TRANSLATE * width, zeros)
  shift_y = where("translate_y", strength * MAX_TRANSLATE * height, zeros)
  cos, sin = tf.cos(angle), tf.sin(angle)
  # A = rotation @ [[1, shear_x], [shear_y, 1]]; no op draws two of them at once.
  return augmentation.about_centre(
      (cos - sin * shear_y, cos * shear_x - sin, sin + cos * shear_y, sin * shear_x + cos),
      (shift_x, shift_y), height, width)


def _grey(images):
  """PIL's "L" conversion (ITU-R 601-2 luma, rounded to a level) of [B, H, W, C] pixels,
  as [B, H, W, 1]."""
  if images.shape[-1] == 1:
    return images
  # PIL's fixed-point weights (0.299, 0.587, 0.114 in 16 bits), rounded as PIL rounds.
  weights = tf.constant([19595.0, 38470.0, 7471.0])
  return tf.floor((tf.reduce_sum(images * weights, axis=-1, keepdims=True) + 32768.0) / 65536.0)


def _blend(base, images, factor):
  """PIL's ImageEnhance: base + factor x (images - base), clipped to [0, 255]."""
  return tf.clip_by_value(base + factor[:, None, None, None] * (images - base), 0.0, 255.0)


def autocontrast(images):
  """Each image's channels stretched from their own [min, max] to [0, 255]."""
  low = tf.reduce_min(images, axis=[1, 2], keepdims=True)
  high = tf.reduce_max(images, axis=[1, 2], keepdims=True)
  span = high - low
  stretched = (images - low) * 255.0 / tf.maximum(span, 1.0)
  return tf.where(span > 0, tf.floor(stretched), images)


def equalize(images):
  """PIL's ImageOps.equalize per image and channel: the histogram made about flat."""
  batch, height, width, channels = images.shape
  levels = tf.cast(
      tf.reshape(tf.transpose(tf.cast(images, tf.int32), [0, 3, 1, 2]),
                 [batch * channels, height * width]), tf.int32)
  histogram = tf.math.bincount(levels, minlength=256, maxlength=256, axis=-1)
  top_count = tf.gather(histogram, tf.reduce_max(levels, axis=1), batch_dims=1)
  step = (height * width - top_count) // 255
  before = tf.cumsum(histogram, axis=1, exclusive=True)
  lookup = tf.minimum((before + (step // 2)[:, None]) // tf.maximum(step, 1)[:, None], 255)
  equalized = tf.gather(lookup, levels, batch_dims=1)
  equalized = tf.where(step[:, None] > 0, equalized, levels)
  equalized = tf.reshape(tf.cast(equalized, images.dtype), [batch, channels, height, width])
  return tf.transpose(equalized, [0, 2, 3, 1])


def solarize(images, magnitude):
  threshold = 256.0 * (1.0 - magnitude)
  return tf.where(images >= threshold, 255.0 - images, images)


def posterize(images, magnitude):
  removed = int(round(magnitude * MAX_POSTERIZE_BITS_REMOVED))
  quantum = float(2**removed)
  return tf.floor(images / quantum) * quantum


def color(images, factor):
  return _blend(_grey(images), images, factor)


def contrast(images, factor):
  """Blend with the grey of the image's mean luma (PIL rounds it to an integer)."""
  mean = tf.floor(tf.reduce_mean(_grey(images), axis=[1, 2, 3], keepdims=True) + 0.5)
  return _blend(mean, images, factor)


def brightness(images, factor):
  return _blend(tf.zeros_like(images), images, factor)


def sharpness(images, factor):
  """Blend with PIL's SMOOTH filter (3x3, centre 5, others 1, /13); the border stays."""
  channels = images.shape[-1]
  kernel = tf.constant([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  smooth = tf.floor(tf.nn.depthwise_conv2d(images, kernel, [1, 1, 1, 1], "VALID") + 0.5)
  smooth = tf.pad(smooth, [[0, 0], [1, 1], [1, 1], [0, 0]])
  interior = tf.pad(tf.ones_like(smooth[:, 1:-1, 1:-1, :1]), [[0, 0], [1, 1], [1, 1], [0, 0]])
  smooth = interior * smooth + (1.0 - interior) * images
  return _blend(smooth, images, factor)


def colour_op(name, images, magnitude, sign):
  """Colour operation `name` at `magnitude` (0-1) with per-image `sign` (+-1, for the
  enhancements: stronger or weaker than the image) on float pixels [0, 255]."""
  factor = 1.0 + sign * MAX_ENHANCE * magnitude
  return {
      "identity": lambda: images,
      "autocontrast": lambda: autocontrast(images),
      "equalize": lambda: equalize(images),
      "solarize": lambda: solarize(images, magnitude),
      "posterize": lambda: posterize(images, magnitude),
      "color": lambda: color(images, factor),
      "contrast": lambda: contrast(images, factor),
      "brightness": lambda: brightness(images, factor),
      "sharpness": lambda: sharpness(images, factor),
  }[name]()


def _layer(images, magnitude, seed):
  """One RandAugment layer: an operation per image, drawn uniformly from OPS."""
  batch, height, width = images.shape[0], images.shape[1], images.shape[2]
  seeds = tf.random.experimental.stateless_split(seed, num=2)
  op = tf.random.stateless_uniform([batch], seeds[0], 0, len(OPS), dtype=tf.int32)
  sign = tf.where(tf.random.stateless_uniform([batch], seeds[1]) < 0.5, -1.0, 1.0)
  warped = augmentation.warp_bilinear(images, affine_rows(op, sign * magnitude, height, width))
  out = tf.where(tf.less(op, len(GEOMETRIC))[:, None, None, None], warped, images)
  for name in COLOUR[1:]:
    chosen = tf.equal(op, OPS.index(name))[:, None, None, None]
    out = tf.where(chosen, colour_op(name, images, magnitude, sign), out)
  return out


def augment_batch(images, ops, magnitude, seed):
  """`ops` RandAugment layers over a [B, H, W, C] batch (uint8 or float in [0, 255]) at
  `magnitude` (0-10). Returns float32 pixels in [0, 255]."""
  images = tf.cast(images, tf.float32)
  for seed_of_layer in tf.unstack(tf.random.experimental.stateless_split(seed, num=ops)):
    images = _layer(images, magnitude / MAX_MAGNITUDE, seed_of_layer)
  return images
