"""Input pipeline, augmentation and offline preparation, on mock and real-format data."""

import os

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import base
from kmodels import data, netcheck, training
from kmodels.data import augmentation, preparation
from kmodels.errors import UserError


def _no_augmentation(**changes):
  aug = base.augmentation(enabled=True,
                          rotation_degrees=0.0,
                          zoom=0.0,
                          shift=0.0,
                          shear=0.0,
                          horizontal_flip=False)
  aug.update(changes)
  return aug


class PipelineTest(parameterized.TestCase):

  def test_mock_tfds_batches_are_static_scaled_and_cover_eval_once(self):
    config = testutil.tiny_config(dataset__name="cifar10").dataset
    with tfds.testing.mock_data(num_examples=37):
      datasets = data.load(config, batch_size=8, seed=0)
    self.assertEqual(datasets.info.image_shape, (32, 32, 3))
    self.assertEqual(datasets.info.num_classes, 10)
    self.assertEqual((datasets.info.train_examples, datasets.info.eval_examples), (37, 37))
    # drop_remainder: a fully static batch shape (what XLA and TPUs need).
    self.assertEqual(datasets.train.element_spec[0].shape, (8, 32, 32, 3))
    images, _ = next(iter(datasets.train))
    self.assertEqual(images.dtype, tf.float32)
    self.assertBetween(float(tf.reduce_min(images)), 0.0, 1.0)
    self.assertBetween(float(tf.reduce_max(images)), 0.0, 1.0)
    eval_labels = np.concatenate([y.numpy() for _, y in datasets.eval])
    self.assertLen(eval_labels, 37)  # 4 full batches + a partial one, nothing dropped

  def test_training_order_is_reshuffled_every_epoch_and_seeded(self):
    config = testutil.tiny_config(dataset__source="synthetic").dataset

    def first_two_epochs(seed):
      train = data.load(config, batch_size=8, seed=seed).train
      batches = [y.numpy() for _, y in train.take(16)]  # 64 examples = 8 batches per epoch
      return np.concatenate(batches[:8]), np.concatenate(batches[8:])

    epoch1, epoch2 = first_two_epochs(seed=3)
    self.assertCountEqual(epoch1.tolist(), epoch2.tolist())  # same examples, each once
    self.assertFalse(np.array_equal(epoch1, epoch2))  # in a new order
    np.testing.assert_array_equal(first_two_epochs(seed=3)[0], epoch1)

  def test_synthetic_source_has_the_datasets_shapes(self):
    config = testutil.tiny_config(dataset__source="synthetic", dataset__name="cifar10").dataset
    datasets = data.load(config, batch_size=8, seed=0)
    self.assertEqual(datasets.info.image_shape, (32, 32, 3))
    self.assertEqual(datasets.info.num_classes, 10)
    images, labels = next(iter(datasets.train))
    self.assertEqual(images.shape, (8, 32, 32, 3))
    self.assertTrue(np.all((labels.numpy() >= 0) & (labels.numpy() < 10)))
    self.assertEqual(datasets.info.train_examples, config.synthetic_train_examples)

  def test_each_worker_reads_its_own_shard_of_every_epoch(self):
    """Two input pipelines (two workers), two replicas: disjoint shards that cover the split."""
    config = testutil.tiny_config(dataset__source="synthetic",
                                  dataset__shuffle_buffer=1000,
                                  dataset__synthetic_train_examples=40).dataset
    datasets = data.load(config, batch_size=8, seed=0)
    shards = []
    for pipeline in range(2):
      context = tf.distribute.InputContext(num_input_pipelines=2,
                                           input_pipeline_id=pipeline,
                                           num_replicas_in_sync=2)
      train = datasets.make_train(context)
      self.assertEqual(train.element_spec[0].shape[0], 4)  # per-replica batch
      images = np.concatenate([x.numpy() for x, _ in train.take(5)])  # 20 = one epoch
      shards.append({image.tobytes() for image in images})
    self.assertLen(shards[0], 20)
    self.assertLen(shards[1], 20)
    self.assertEmpty(shards[0] & shards[1])  # no example read twice in an epoch

  def test_batch_larger_than_dataset_is_a_user_error(self):
    config = testutil.tiny_config(dataset__source="synthetic").dataset
    with self.assertRaisesRegex(UserError, "batch_size 128 is larger than the 64"):
      data.load(config, batch_size=128, seed=0)


class AugmentationTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    self.images = tf.random.stateless_uniform([4, 12, 10, 3], seed=[1, 2])
    self.seed = tf.constant([5, 6], tf.int64)

  def test_zero_strength_is_identity(self):
    out = augmentation.augment_batch(self.images, _no_augmentation(), self.seed)
    np.testing.assert_allclose(out, self.images, atol=1e-5)

  def test_flip_mirrors_some_images_and_leaves_the_others(self):
    out = augmentation.augment_batch(self.images, _no_augmentation(horizontal_flip=True), self.seed)
    flipped = tf.image.flip_left_right(self.images)
    kinds = []
    for i in range(4):
      if np.allclose(out[i], flipped[i], atol=1e-5):
        kinds.append("flipped")
      else:
        np.testing.assert_allclose(out[i], self.images[i], atol=1e-5)
        kinds.append("kept")
    images = tf.random.stateless_uniform([64, 12, 10, 3], seed=[1, 2])
    out = augmentation.augment_batch(images, _no_augmentation(horizontal_flip=True), self.seed)
    n_flipped = sum(
        np.allclose(o, f, atol=1e-5) for o, f in zip(out, tf.image.flip_left_right(images)))
    self.assertBetween(n_flipped, 16, 48)  # ~half of 64

  def test_pure_shift_moves_pixels_by_whole_steps_with_nearest_fill(self):
    transforms = augmentation.random_affine_transforms(64, 12, 10, _no_augmentation(shift=0.2),
                                                       self.seed).numpy()
    np.testing.assert_allclose(transforms[:, [0, 4]], 1.0, atol=1e-6)  # no scaling
    np.testing.assert_allclose(transforms[:, [1, 3]], 0.0, atol=1e-6)  # no rotation/shear
    self.assertLessEqual(np.abs(transforms[:, 2]).max(), 0.2 * 10 + 1e-5)
    self.assertLessEqual(np.abs(transforms[:, 5]).max(), 0.2 * 12 + 1e-5)
    # Fill mode nearest: a one-column shift repeats the edge column instead of black.
    image = tf.reshape(tf.range(12 * 10 * 1, dtype=tf.float32), [1, 12, 10, 1])
    shift_one_column = tf.constant([[1, 0, 1, 0, 1, 0, 0, 0]], tf.float32)
    out = augmentation.warp_bilinear(image, shift_one_column)
    np.testing.assert_allclose(out[0, :, :-1, 0], image[0, :, 1:, 0])
    np.testing.assert_allclose(out[0, :, -1, 0], image[0, :, -1, 0])

  @parameterized.parameters((64, 32, 32, 3), (16, 28, 28, 1), (4, 12, 10, 3))
  def test_warp_computes_what_tensorflows_projective_transform_op_does(self, *shape):
    # Strong transforms, so that many source points fall between pixels and outside.
    aug = base.augmentation(enabled=True, rotation_degrees=40.0, zoom=0.4, shift=0.3, shear=20.0)
    images = tf.random.stateless_uniform(shape, seed=[3, 4])
    transforms = augmentation.random_affine_transforms(*shape[:3], aug, self.seed)
    expected = tf.raw_ops.ImageProjectiveTransformV3(images=images,
                                                     transforms=transforms,
                                                     output_shape=shape[1:3],
                                                     fill_value=0.0,
                                                     interpolation="BILINEAR",
                                                     fill_mode="NEAREST")
    np.testing.assert_allclose(augmentation.warp_bilinear(images, transforms), expected, atol=1e-5)

  def test_uint8_batches_are_scaled_in_the_warp_as_floats_would_be(self):
    images = tf.random.stateless_uniform([8, 12, 10, 3], seed=[3, 4], maxval=256, dtype=tf.int32)
    aug = base.augmentation(enabled=True)
    scaled_in_warp = augmentation.augment_batch(tf.cast(images, tf.uint8),
                                                aug,
                                                self.seed,
                                                scale=1 / 255)
    scaled_first = augmentation.augment_batch(tf.cast(images, tf.float32) / 255, aug, self.seed)
    self.assertEqual(scaled_in_warp.dtype, tf.float32)
    np.testing.assert_allclose(scaled_in_warp, scaled_first, atol=1e-6)

  def test_rotation_stays_within_the_configured_angle(self):
    aug = _no_augmentation(rotation_degrees=18.0)
    transforms = augmentation.random_affine_transforms(256, 32, 32, aug, self.seed).numpy()
    angles = np.degrees(np.arctan2(transforms[:, 3], transforms[:, 0]))
    self.assertLessEqual(np.abs(angles).max(), 18.0 + 1e-4)
    self.assertGreater(np.abs(angles).max(), 15.0)  # and actually uses the range

  def test_same_seed_same_augmentation(self):
    aug = base.augmentation(enabled=True)
    a = augmentation.augment_batch(self.images, aug, self.seed)
    b = augmentation.augment_batch(self.images, aug, self.seed)
    c = augmentation.augment_batch(self.images, aug, self.seed + 1)
    np.testing.assert_array_equal(a, b)
    self.assertFalse(np.allclose(a, c))


class VariableSizeDatasetsTest(parameterized.TestCase):
  """tfds datasets whose images vary in size train at dataset.image_size."""

  @parameterized.parameters("tf_flowers", "imagenette", "imagenet2012")
  def test_a_mock_dataset_trains_at_the_size_asked(self, name):
    workdir = self.create_tempdir().full_path
    config = testutil.tiny_config(dataset__name=name, dataset__image_size=24, model__name="mlp")
    with tfds.testing.mock_data(num_examples=30):
      metrics = training.train_and_evaluate(config, workdir)
    self.assertEqual(1, metrics["epochs_completed"])
    card = testutil.read_json(os.path.join(testutil.export_of(workdir), "model_card.json"), {})
    self.assertEqual([None, 24, 24, 3], card["input"]["shape"])

  def test_a_dataset_without_a_test_split_is_evaluated_on_a_stated_held_out_slice(self):
    archive_dir, data_dir = self.create_tempdir().full_path, self.create_tempdir().full_path
    testutil.write_flower_photos(os.path.join(archive_dir, "flower_photos.tgz"))
    if testutil.TFDS_VERIFIES_ARCHIVES:
      with self.assertRaisesRegex(UserError, testutil.CHECKSUM_MESSAGE):
        preparation.prepare_offline("tf_flowers", archive_dir, data_dir)
      self.skipTest("this tfds rejects test-made archives (checked above); the full lane "
                    "prepares and trains tf_flowers")
    builder = preparation.prepare_offline("tf_flowers", archive_dir, data_dir)
    self.assertEqual(["train"], list(builder.info.splits.keys()))
    workdir = self.create_tempdir().full_path
    config = testutil.tiny_config(dataset__name="tf_flowers",
                                  dataset__data_dir=data_dir,
                                  dataset__image_size=16,
                                  model__name="mlp")
    with self.assertLogs(level="INFO") as logs:
      metrics = training.train_and_evaluate(config, workdir)
    self.assertIn(
        "tf_flowers has no 'test' split (it has train): training on 'train[:90%]', "
        "evaluating on 'train[90%:]'", "\n".join(logs.output))
    recorded = testutil.read_json(os.path.join(workdir, "config.json"), {})["dataset"]
    self.assertEqual(("train[:90%]", "train[90%:]"),
                     (recorded["train_split"], recorded["eval_split"]))
    with open(os.path.join(workdir, "classification_report.txt")) as f:
      self.assertRegex(f.read(), r"accuracy\s+[\d.]+\s+4\n")  # 10 % of 40
    self.assertIn("test_accuracy", metrics)

  def test_without_an_image_size_a_variable_size_dataset_says_to_set_one(self):
    config = testutil.tiny_config(dataset__name="tf_flowers").dataset
    with tfds.testing.mock_data(num_examples=4), self.assertRaisesRegex(
        UserError, "images of varying size.*--config.dataset.image_size=224"):
      data.load(config, batch_size=2, seed=0)

  def test_imagenet2012_prepares_from_its_manual_archives_and_trains(self):
    archive_dir, data_dir = self.create_tempdir().full_path, self.create_tempdir().full_path
    testutil.write_imagenet_archives(archive_dir)
    proc = testutil.run_launcher("prepare_data", "--dataset=imagenet2012",
                                 f"--archive_dir={archive_dir}", f"--data_dir={data_dir}")
    self.assertEqual(0, proc.returncode, proc.stderr[-2000:])
    self.assertRegex(
        proc.stderr, r"Prepared imagenet2012 .*(train: 6.*validation: 4|"
        r"validation: 4.*train: 6)")
    config = testutil.tiny_config(dataset__name="imagenet2012",
                                  dataset__data_dir=data_dir,
                                  dataset__image_size=16,
                                  dataset__download=False,
                                  model__name="mlp",
                                  train__batch_size=2)
    datasets = data.load(config.dataset, batch_size=2, seed=0)
    self.assertEqual((16, 16, 3), datasets.info.image_shape)
    self.assertEqual(1000, datasets.info.num_classes)
    labels = np.concatenate([y for _, y in datasets.train.take(3)])
    self.assertContainsSubset(set(labels.tolist()), {0, 1, 2})  # the three synsets written
    self.assertEqual(4, datasets.info.eval_examples)  # evaluated on its validation split

  def test_imagenet2012_without_its_archives_names_them(self):
    with self.assertRaisesRegex(UserError, "ILSVRC2012_img_train.tar.*ILSVRC2012_img_val.tar"):
      preparation.prepare_offline("imagenet2012",
                                  self.create_tempdir().full_path,
                                  self.create_tempdir().full_path)


class OfflinePreparationTest(absltest.TestCase):

  def test_missing_archives_are_listed_by_name(self):
    archive_dir = self.create_tempdir().full_path
    open(os.path.join(archive_dir, "train-images-idx3-ubyte.gz"), "w").close()
    with self.assertRaises(UserError) as ctx:
      preparation.prepare_offline("mnist", archive_dir, self.create_tempdir().full_path)
    message = str(ctx.exception)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                 "train-labels-idx1-ubyte.gz"):
      self.assertIn(name, message)
    self.assertIn("found: train-images-idx3-ubyte.gz", message)

  def test_unprepared_dataset_names_the_fix(self):
    config = testutil.tiny_config(dataset__name="fashion_mnist",
                                  dataset__download=False,
                                  dataset__data_dir=self.create_tempdir().full_path).dataset
    with self.assertRaises(UserError) as ctx:
      preparation.ensure_prepared(config)
    self.assertIn("python -m launch.prepare_data --dataset=fashion_mnist", str(ctx.exception))
    self.assertIn("apt-get install -y dataset-fashion-mnist", str(ctx.exception))

  def test_unknown_dataset_lists_tested_ones(self):
    with self.assertRaisesRegex(UserError, "Unknown dataset.name 'cifar11'.*fashion_mnist"):
      preparation.get_builder("cifar11")

  def test_closed_port_is_unreachable(self):
    self.assertFalse(netcheck.reachable("127.0.0.1", 9, timeout_seconds=1))

  def test_real_cifar10_builder_prepares_a_real_format_archive(self):
    archive_dir, data_dir = self.create_tempdir().full_path, self.create_tempdir().full_path
    written = testutil.write_cifar10_archive(os.path.join(archive_dir, "cifar-10-binary.tar.gz"),
                                             train_per_batch=3)
    if testutil.TFDS_VERIFIES_ARCHIVES:
      with self.assertRaisesRegex(UserError, testutil.CHECKSUM_MESSAGE + ".*full lane"):
        preparation.prepare_offline("cifar10", archive_dir, data_dir)
      self.skipTest("this tfds rejects test-made archives (checked above); the full lane "
                    "prepares the real cifar10 builder")
    builder = preparation.prepare_offline("cifar10", archive_dir, data_dir)
    self.assertEqual(builder.info.splits["train"].num_examples, 15)
    self.assertEqual(builder.info.features["label"].names[0], "airplane")
    read = builder.as_dataset(split="test", as_supervised=True).as_numpy_iterator()
    # tfds reorders examples when it writes them; compare as sets of (label, pixels).
    as_keys = lambda pairs: sorted((int(y), x.tobytes()) for x, y in pairs)
    self.assertEqual(as_keys((x, y) for x, y in read), as_keys((x, y) for y, x in written["test"]))


if __name__ == "__main__":
  absltest.main()
