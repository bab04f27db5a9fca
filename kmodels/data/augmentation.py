"""Random affine augmentation of whole batches: the matrices, and the warp XLA compiles.

The warp computes what TF's ImageProjectiveTransformV3 computes (bilinear, nearest fill),
written as gathers of the pixels in one XLA-compiled function that also scales them:
kmodels/docs/measurements.md "Speed" says why.
"""

import math

import tensorflow as tf


def random_affine_transforms(batch_size, height, width, aug, seed):
  """Per-image affine maps (output pixel -> input pixel), as ImageDataGenerator draws them.

  Rotation, shear and zoom act about the image centre, then a shift is added; a
  horizontal flip mirrors the output. Returned as [batch, 8] rows in the layout of TF's
  projective transforms (`warp_bilinear` reads the first six). `seed` is a stateless
  seed (shape [2]).
  """
  seeds = tf.random.experimental.stateless_split(seed, num=7)

  def uniform(i, bound):
    return tf.random.stateless_uniform([batch_size], seeds[i], -bound, bound)

  angle = uniform(0, aug.rotation_degrees * math.pi / 180)
  # ImageDataGenerator reads shear_range in degrees; the CIFAR styles tutorial's 0.15 is kept as it
  # ran.
  shear = uniform(1, aug.shear * math.pi / 180)
  zoom_x = 1.0 + uniform(2, aug.zoom)
  zoom_y = 1.0 + uniform(3, aug.zoom)
  shift_x = uniform(4, aug.shift) * width
  shift_y = uniform(5, aug.shift) * height
  flip = tf.ones([batch_size])
  if aug.horizontal_flip:
    flip = tf.where(tf.random.stateless_uniform([batch_size], seeds[6]) < 0.5, -1.0, 1.0)

  cos, sin = tf.cos(angle), tf.sin(angle)
  # A = rotation @ shear @ zoom @ flip, written out per matrix entry.
  a00 = cos * zoom_x * flip
  a01 = (-cos * tf.sin(shear) - sin * tf.cos(shear)) * zoom_y
  a10 = sin * zoom_x * flip
  a11 = (-sin * tf.sin(shear) + cos * tf.cos(shear)) * zoom_y
  return about_centre((a00, a01, a10, a11), (shift_x, shift_y), height, width)


def about_centre(matrix, shift, height, width):
  """[batch, 8] transform rows (TF's projective layout) for per-image 2x2 maps `matrix`
  (a00, a01, a10, a11) acting about the image centre, then `shift` (x, y) in pixels:
  input = A (out - c) + c + shift."""
  a00, a01, a10, a11 = matrix
  cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
  b0 = cx - a00 * cx - a01 * cy + shift[0]
  b1 = cy - a10 * cx - a11 * cy + shift[1]
  zeros = tf.zeros_like(a00)
  return tf.stack([a00, a01, b0, a10, a11, b1, zeros, zeros], axis=1)


def augment_batch(images, aug, seed, scale=1.0):
  """One random affine transform per image of a [B, H, W, C] batch (uint8 or float).

  Returns float32 pixels times `scale`: 1/255 turns a uint8 batch into [0, 1] within the
  same compiled loop.
  """
  batch, height, width = images.shape[0], images.shape[1], images.shape[2]
  transforms = random_affine_transforms(batch, height, width, aug, seed)
  return tf.ensure_shape(warp_bilinear(images, transforms, scale), images.shape)


def _warp_bilinear(images, transforms, scale=1.0):
  """`ImageProjectiveTransformV3(BILINEAR, fill_mode=NEAREST)` for affine `transforms`.

  Written as gathers so that XLA fuses it into one loop: no intermediate tensor is
  written, and uint8 pixels are gathered as they are and converted in registers. In
  tf.data it gave 1.7-2.1x the op's images/s on float pixels, and 1.5x more on uint8 ones
  with the scaling fused (kmodels/docs/measurements.md "Speed"); tests compare it with the op.
  Returns float32 samples times `scale`.
  """
  batch, height, width, channels = images.shape
  out_y, out_x = tf.meshgrid(tf.range(height, dtype=tf.float32),
                             tf.range(width, dtype=tf.float32),
                             indexing="ij")
  out_x, out_y = tf.reshape(out_x, [1, -1]), tf.reshape(out_y, [1, -1])
  a = [transforms[:, i:i + 1] for i in range(6)]  # rows [a0 a1 a2; a3 a4 a5]
  # Fill mode "nearest": a source point outside the image reads its nearest edge pixel.
  src_x = tf.clip_by_value(a[0] * out_x + a[1] * out_y + a[2], 0.0, width - 1.0)
  src_y = tf.clip_by_value(a[3] * out_x + a[4] * out_y + a[5], 0.0, height - 1.0)
  x0, y0 = tf.floor(src_x), tf.floor(src_y)
  weight_x, weight_y = (src_x - x0)[..., None], (src_y - y0)[..., None]
  x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
  x1, y1 = tf.minimum(x0 + 1, width - 1), tf.minimum(y0 + 1, height - 1)
  pixels = tf.reshape(images, [batch, height * width, channels])

  def at(y, x):
    return tf.cast(tf.gather(pixels, y * width + x, batch_dims=1), tf.float32)

  top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * weight_x
  bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * weight_x
  blended = top + (bottom - top) * weight_y
  return tf.reshape(blended * scale, [batch, height, width, channels])


warp_bilinear = tf.function(_warp_bilinear, jit_compile=True)
