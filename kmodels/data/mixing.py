"""MixUp and CutMix of training batches: images blended or patched with a partner's, and
the labels mixed in the same shares (dataset.augment.mixup_alpha, .cutmix_alpha).

Each image's partner is the next image of its batch (the batch is already shuffled), and
every draw is stateless from the batch's seed, so a resumed run mixes as the unbroken one.
The targets are rows of class shares summing to 1: the loss and the accuracy metrics of
kmodels.models take them as they take integer labels.
"""

import tensorflow as tf


def mixes(aug):
  """Whether `dataset.augment` mixes labels (the training targets are then class shares)."""
  return aug.mixup_alpha > 0 or aug.cutmix_alpha > 0


def _beta(shape, alpha, seed):
  """Beta(alpha, alpha) draws, as the ratio of two Gamma(alpha) draws."""
  seeds = tf.random.experimental.stateless_split(seed, num=2)
  first = tf.random.stateless_gamma(shape, seeds[0], alpha)
  second = tf.random.stateless_gamma(shape, seeds[1], alpha)
  return first / (first + second)


def _cutmix_boxes(batch, height, width, alpha, seed):
  """Per image, a box of about (1 - lambda) of the area (lambda ~ Beta(alpha, alpha)) at a
  uniform centre, clipped to the image: its mask [batch, H, W, 1] (1 inside) and the share
  of the image left outside it."""
  seeds = tf.random.experimental.stateless_split(seed, num=3)
  cut = tf.sqrt(1.0 - _beta([batch], alpha, seeds[0]))  # side fraction of the box
  centre_y = tf.random.stateless_uniform([batch], seeds[1]) * height
  centre_x = tf.random.stateless_uniform([batch], seeds[2]) * width

  def span(centre, size):
    low = tf.clip_by_value(tf.round(centre - cut * size / 2), 0, size)
    high = tf.clip_by_value(tf.round(centre + cut * size / 2), 0, size)
    return low[:, None], high[:, None]

  top, bottom = span(centre_y, height)
  left, right = span(centre_x, width)
  rows = tf.range(height, dtype=tf.float32)[None, :]
  columns = tf.range(width, dtype=tf.float32)[None, :]
  in_rows = tf.cast((rows >= top) & (rows < bottom), tf.float32)  # [batch, H]
  in_columns = tf.cast((columns >= left) & (columns < right), tf.float32)  # [batch, W]
  mask = in_rows[:, :, None, None] * in_columns[:, None, :, None]
  kept = 1.0 - (bottom - top)[:, 0] * (right - left)[:, 0] / (height * width)
  return mask, kept


def mix_batch(images, labels, num_classes, aug, seed):
  """(images, targets): float images [B, H, W, C] mixed with their partners', and targets
  [B, num_classes] holding each image's share of its own and its partner's label.

  MixUp blends whole images with weight lambda ~ Beta(mixup_alpha, mixup_alpha); CutMix
  pastes a box of the partner's image and the label shares are the areas. With both on,
  each image gets one of the two, at even odds.
  """
  batch, height, width = images.shape[0], images.shape[1], images.shape[2]
  seeds = tf.random.experimental.stateless_split(seed, num=3)
  partner_images = tf.roll(images, shift=1, axis=0)
  own = tf.one_hot(labels, num_classes)
  partner = tf.roll(own, shift=1, axis=0)
  shares, mixed = [], []
  if aug.mixup_alpha > 0:
    weight = _beta([batch], aug.mixup_alpha, seeds[0])
    blend = weight[:, None, None, None]
    mixed.append(blend * images + (1.0 - blend) * partner_images)
    shares.append(weight)
  if aug.cutmix_alpha > 0:
    mask, kept = _cutmix_boxes(batch, height, width, aug.cutmix_alpha, seeds[1])
    mixed.append(images * (1.0 - mask) + partner_images * mask)
    shares.append(kept)
  if len(mixed) == 2:
    use_first = tf.random.stateless_uniform([batch], seeds[2]) < 0.5
    mixed = [tf.where(use_first[:, None, None, None], mixed[0], mixed[1])]
    shares = [tf.where(use_first, shares[0], shares[1])]
  share = shares[0][:, None]
  return mixed[0], share * own + (1.0 - share) * partner
