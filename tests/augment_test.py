"""RandAugment, MixUp and CutMix, each tested for its effect: the colour operations against
PIL's, the geometric ones by where pixels go, mixed targets against the pixels mixed, the
training losses and metrics on mixed targets, and a resumed pipeline's batches."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from PIL import Image, ImageEnhance, ImageOps
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import base
from kmodels import data, models, validation
from kmodels.data import augmentation, mixing, randaugment
from kmodels.errors import UserError
from tests import testutil


def _real_images(test, count=6):
  """uint8 [count, 28, 28, 1] real Fashion-MNIST pictures, and [count, 28, 28, 3] RGB ones
  made of three pictures each (real pixel statistics, channels that differ)."""
  images, _ = testutil.real_fashion_mnist_test_files(test)
  grey = images[:count]
  rgb = np.concatenate(
      [images[count:2 * count], images[2 * count:3 * count], images[3 * count:4 * count]], axis=-1)
  return grey, rgb


def _pil(image):
  return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def _array(pil_image, channels):
  array = np.asarray(pil_image, np.float32)
  return array[..., None] if channels == 1 else array


# (operation, magnitude 0-1, sign, what PIL computes for it)
_PIL_OPS = (
    ("autocontrast", 1.0, 1.0, ImageOps.autocontrast),
    ("equalize", 1.0, 1.0, ImageOps.equalize),
    ("solarize", 0.6, 1.0, lambda im: ImageOps.solarize(im, 256 * 0.4)),
    ("posterize", 0.5, 1.0, lambda im: ImageOps.posterize(im, 6)),
    ("posterize", 1.0, 1.0, lambda im: ImageOps.posterize(im, 4)),
    ("color", 0.5, 1.0, lambda im: ImageEnhance.Color(im).enhance(1.45)),
    ("color", 0.5, -1.0, lambda im: ImageEnhance.Color(im).enhance(0.55)),
    ("contrast", 0.9, 1.0, lambda im: ImageEnhance.Contrast(im).enhance(1.81)),
    ("contrast", 0.9, -1.0, lambda im: ImageEnhance.Contrast(im).enhance(0.19)),
    ("brightness", 0.5, 1.0, lambda im: ImageEnhance.Brightness(im).enhance(1.45)),
    ("sharpness", 1.0, 1.0, lambda im: ImageEnhance.Sharpness(im).enhance(1.9)),
    ("sharpness", 1.0, -1.0, lambda im: ImageEnhance.Sharpness(im).enhance(0.1)),
)


class RandAugmentTest(parameterized.TestCase):

  @parameterized.parameters(*_PIL_OPS)
  def test_colour_operations_compute_what_pil_computes(self, name, magnitude, sign, pil_op):
    for images in _real_images(self):
      if name == "color" and images.shape[-1] == 1:
        continue  # PIL's Color on a grey image is the identity; ours is too (below)
      ours = randaugment.colour_op(name, tf.constant(images, tf.float32), magnitude,
                                   tf.fill([len(images)], sign)).numpy()
      theirs = np.stack([_array(pil_op(_pil(image)), images.shape[-1]) for image in images])
      # PIL rounds to uint8 after each blend; ours keeps floats: within one level.
      np.testing.assert_allclose(ours, theirs, atol=1.0 + 1e-4, err_msg=name)
      if name in ("autocontrast", "equalize", "solarize", "posterize"):
        np.testing.assert_array_equal(ours, theirs, err_msg=name)

  def test_translation_moves_content_by_its_share_of_the_side(self):
    images = np.zeros([2, 20, 20, 1], np.float32)
    images[:, :, 10] = 255.0  # a bright column at x = 10
    rows = randaugment.affine_rows(tf.constant([randaugment.OPS.index("translate_x")] * 2),
                                   tf.constant([-0.5, 0.5]), 20, 20)
    moved = augmentation.warp_bilinear(tf.constant(images), rows).numpy()
    shift = 0.5 * randaugment.MAX_TRANSLATE * 20  # 4.5 px: the column spreads over two
    for image, direction in zip(moved, (1, -1)):
      columns = image[10, :, 0]
      centre = (columns * np.arange(20)).sum() / columns.sum()
      self.assertAlmostEqual(centre, 10 + direction * shift, delta=0.01)

  def test_every_operation_is_drawn_and_the_draws_are_seeded(self):
    images = np.random.RandomState(0).randint(0, 256, [256, 8, 8, 3]).astype(np.uint8)
    seed = tf.constant([3, 4], tf.int64)
    first = randaugment.augment_batch(images, 1, 10, seed).numpy()
    np.testing.assert_array_equal(first, randaugment.augment_batch(images, 1, 10, seed))
    changed = np.any(first != images, axis=(1, 2, 3))
    # One op in 14 is the identity; every other changes noise images at magnitude 10.
    self.assertBetween(changed.mean(), 0.85, 0.99)
    self.assertTrue(np.all((first >= 0) & (first <= 255)))
    other = randaugment.augment_batch(images, 1, 10, tf.constant([3, 5], tf.int64)).numpy()
    self.assertFalse(np.array_equal(first, other))

  def test_magnitude_zero_changes_only_what_autocontrast_and_equalize_change(self):
    images, _ = _real_images(self, count=64)
    out = randaugment.augment_batch(images, 2, 0, tf.constant([1, 1], tf.int64)).numpy()
    changed = np.any(np.abs(out - images) > 1e-3, axis=(1, 2, 3))
    for image, was_changed in zip(images, changed):
      if was_changed:  # then by an operation with no magnitude
        stretched = _array(ImageOps.autocontrast(_pil(image)), 1)
        equalized = _array(ImageOps.equalize(_pil(image)), 1)
        self.assertTrue(np.any(stretched != image) or np.any(equalized != image))
    self.assertLess(changed.mean(), 0.5)


def _mix_config(**changes):
  aug = base.augmentation(enabled=False)
  aug.update(changes)
  return aug


def _constant_images(batch=8, size=16):
  """Image i is filled with value i + 1: every pixel says which image it came from."""
  return tf.constant(
      np.arange(1, batch + 1, dtype=np.float32)[:, None, None, None] *
      np.ones([batch, size, size, 1], np.float32))


class MixingTest(parameterized.TestCase):

  def test_mixup_targets_sum_to_one_and_are_the_pixels_blend_weights(self):
    images, labels = _constant_images(), tf.range(8) % 4
    mixed, targets = mixing.mix_batch(images, labels, 4, _mix_config(mixup_alpha=0.4),
                                      tf.constant([0, 1], tf.int64))
    targets = targets.numpy()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    own_value, partner_value = np.arange(1, 9), np.roll(np.arange(1, 9), 1)
    own_share = targets[np.arange(8), labels.numpy()]  # labels differ from the partner's
    expected = own_share * own_value + (1 - own_share) * partner_value
    np.testing.assert_allclose(mixed.numpy()[:, 0, 0, 0], expected, rtol=1e-5)
    self.assertTrue(np.all(mixed.numpy() == mixed.numpy()[:, :1, :1]))  # whole images
    self.assertGreater(np.std(own_share), 0.01)  # a weight per image

  def test_cutmix_partner_share_is_the_pasted_area(self):
    images, labels = _constant_images(batch=64), tf.range(64) % 10
    mixed, targets = mixing.mix_batch(images, labels, 10, _mix_config(cutmix_alpha=1.0),
                                      tf.constant([5, 6], tf.int64))
    mixed, targets = mixed.numpy(), targets.numpy()
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    partner_value = np.roll(np.arange(1, 65), 1)
    pasted = (mixed[..., 0] == partner_value[:, None, None]).mean(axis=(1, 2))
    partner_share = targets[np.arange(64), np.roll(labels.numpy(), 1)]
    np.testing.assert_allclose(partner_share, pasted, atol=1e-6)
    self.assertBetween(pasted.mean(), 0.2, 0.8)
    for image, value in zip(mixed, partner_value):  # the paste is one box
      rows, columns = np.nonzero(image[..., 0] == value)
      if rows.size:
        box = image[rows.min():rows.max() + 1, columns.min():columns.max() + 1, 0]
        self.assertTrue(np.all(box == value))

  def test_both_on_gives_each_image_one_of_the_two(self):
    images, labels = _constant_images(batch=64), tf.range(64) % 10
    mixed, _ = mixing.mix_batch(images, labels, 10, _mix_config(mixup_alpha=1.0, cutmix_alpha=1.0),
                                tf.constant([7, 8], tf.int64))
    whole = np.all(mixed.numpy() == mixed.numpy()[:, :1, :1], axis=(1, 2, 3))
    self.assertBetween(whole.mean(), 0.2, 0.8)

  @parameterized.parameters(0.0, 0.1)
  def test_the_loss_on_mixed_targets_is_the_mixed_losses(self, label_smoothing):
    loss = models.loss("shallownet", label_smoothing=label_smoothing, mixed_targets=True)
    probabilities = tf.constant([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    shares = tf.constant([[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]])
    # Cross-entropy is linear in the target: 0.25 x loss(label 0) + 0.75 x loss(label 1).
    by_label = [loss(tf.constant([[label]] * 2), probabilities) for label in range(3)]
    per_example = tf.keras.losses.categorical_crossentropy(
        shares * (1 - label_smoothing) + label_smoothing / 3, probabilities)
    self.assertAlmostEqual(float(loss(shares, probabilities)),
                           float(tf.reduce_mean(per_example)),
                           places=5)
    self.assertAlmostEqual(float(loss(tf.constant([[2], [2]]), probabilities)),
                           float(by_label[2]),
                           places=6)

  def test_accuracy_on_mixed_targets_counts_the_largest_share(self):
    accuracy = models.accuracy_metric(mixed_targets=True)
    accuracy.update_state(tf.constant([[0.6, 0.4], [0.3, 0.7]]),
                          tf.constant([[0.9, 0.1], [0.8, 0.2]]))
    self.assertAlmostEqual(float(accuracy.result()), 0.5)
    accuracy.update_state(tf.constant([[1], [0]]), tf.constant([[0.1, 0.9], [0.2, 0.8]]))
    self.assertAlmostEqual(float(accuracy.result()), 0.5)


def _all_augmentations(config):
  config.dataset.augment = base.augmentation(enabled=True,
                                             randaugment_ops=2,
                                             mixup_alpha=0.2,
                                             cutmix_alpha=1.0)
  return config


class PipelineTest(absltest.TestCase):

  def test_a_resumed_pipeline_sees_the_unbroken_pipelines_batches(self):
    config = _all_augmentations(testutil.tiny_config(dataset__name="cifar10"))
    with tfds.testing.mock_data(num_examples=64):
      datasets = data.load(config.dataset, 8, seed=3)
      unbroken = [batch for batch in datasets.make_train(None).take(5)]
      resumed = [batch for batch in datasets.make_train(None, start_step=3).take(2)]
    for (images, targets), (want_images, want_targets) in zip(resumed, unbroken[3:]):
      np.testing.assert_array_equal(images, want_images)
      np.testing.assert_array_equal(targets, want_targets)
    images, targets = unbroken[0]
    self.assertEqual(targets.shape, (8, 10))
    np.testing.assert_allclose(targets.numpy().sum(axis=1), 1.0, rtol=1e-6)
    self.assertTrue(np.all((images.numpy() >= 0) & (images.numpy() <= 1)))

  def test_bad_augmentation_keys_are_refused_naming_the_key(self):
    for key, value in (("randaugment_ops", -1), ("randaugment_ops", 2.5), ("randaugment_ops", 99),
                       ("randaugment_magnitude", 11), ("mixup_alpha", -0.1), ("cutmix_alpha",
                                                                              float("nan"))):
      config = testutil.tiny_config()
      config.dataset.augment = base.augmentation(enabled=False, **{key: value})
      with self.assertRaisesRegex(UserError, f"dataset.augment.{key}"):
        validation.validate(config)


if __name__ == "__main__":
  absltest.main()
