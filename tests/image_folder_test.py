"""Image folders: layout errors, bad files by class, records, resume, shards, training.

Real files on disk (JPEG/PNG/GIF/BMP written by Pillow), real tf.data pipelines, and a
real training run whose export is read back with tf.saved_model.load.
"""

import io
import os

from absl.testing import absltest
from absl.testing import parameterized
import hypothesis
from hypothesis import strategies as st
import numpy as np
from PIL import Image
import tensorflow as tf

from tests import testutil
from kmodels import data, training
from kmodels.data import image_folder, images
from kmodels.errors import UserError

_LIMIT = 1_000_000  # max_image_pixels in these tests
_SETTINGS = hypothesis.settings(max_examples=25, deadline=None, derandomize=True)


def _encoded(pixels, kind):
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format=kind)
  return buffer.getvalue()


def _check(data_bytes, max_pixels=_LIMIT):
  """images.check_header on in-memory bytes."""
  return images.check_header(
      lambda offset, length: data_bytes[offset:None if length is None else offset + length],
      len(data_bytes), max_pixels)[0]


_pixels = st.builds(
    lambda h, w, c, seed: np.random.default_rng(seed).integers(
        0, 256, size=(h, w, c), dtype=np.uint8).squeeze(-1 if c == 1 else ()), st.integers(4, 40),
    st.integers(4, 40), st.sampled_from([1, 3]), st.integers(0, 2**16))


class BadFileClassesTest(parameterized.TestCase):
  """Each class of bad file, over many generated members, is named without decoding."""

  @hypothesis.given(_pixels, st.sampled_from(images.DECODABLE_FORMATS))
  @_SETTINGS
  def test_whole_files_of_every_decodable_format_pass(self, pixels, kind):
    self.assertIsNone(_check(_encoded(pixels, kind)))

  @hypothesis.given(_pixels, st.sampled_from(images.DECODABLE_FORMATS), st.floats(0.0, 0.99))
  @_SETTINGS
  def test_a_file_cut_anywhere_is_refused(self, pixels, kind, kept):
    whole = _encoded(pixels, kind)
    problem = _check(whole[:int(len(whole) * kept)])
    self.assertRegex(problem, "empty|truncated|not an image")

  @hypothesis.given(st.binary(min_size=1, max_size=4096))
  @_SETTINGS
  def test_bytes_that_are_no_image_are_refused(self, garbage):
    hypothesis.assume(not garbage.startswith((b"\x89PNG", b"\xff\xd8", b"GIF8", b"BM")))
    self.assertRegex(_check(garbage), "not an image|a .* image; TensorFlow decodes")

  @hypothesis.given(st.integers(1, 200_000), st.integers(1, 200_000))
  @_SETTINGS
  def test_a_header_declaring_more_pixels_than_the_limit_is_refused_before_decoding(
      self, width, height):
    hypothesis.assume(width * height > _LIMIT)
    problem = _check(testutil.png_declaring(width, height))
    self.assertIn(f"declares {width}x{height}", problem)
    self.assertIn("dataset.max_image_pixels", problem)

  @parameterized.parameters("TIFF", "WEBP", "PPM", "ICO")
  def test_formats_tensorflow_cannot_decode_are_named(self, kind):
    pixels = np.full((16, 16, 3), 90, np.uint8)
    self.assertIn(f"a {kind} image; TensorFlow decodes JPEG, PNG, GIF, BMP only",
                  _check(_encoded(pixels, kind)))

  def test_an_empty_file_is_named_so(self):
    self.assertEqual("empty file (0 bytes)", _check(b""))

  @hypothesis.given(st.integers(0, 12), st.integers(0, 12), st.floats(0.0, 0.3))
  @_SETTINGS
  def test_a_folder_is_refused_exactly_when_bad_files_exceed_the_allowed_share(
      self, good, bad, allowed):
    hypothesis.assume(good + bad > 0)
    problems = [("p", "empty")] * bad
    refused = bad > allowed * (good + bad) or bad == good + bad
    if refused:
      with self.assertRaisesRegex(UserError, f"{bad} of {good + bad} files are unreadable"):
        image_folder.report_bad_files(problems, good + bad, "folder", allowed)
    else:
      image_folder.report_bad_files(problems, good + bad, "folder", allowed)


def _write_flat_folder(root, per_class=(8, 8, 8), test_per_class=2):
  """PNGs of one flat grey value each, unique per file: an image's mean names its file."""
  values, value = {}, 10
  for split, counts in (("train", per_class), ("test", [test_per_class] * len(per_class))):
    for label, count in enumerate(counts):
      os.makedirs(os.path.join(root, split, f"c{label}"), exist_ok=True)
      for i in range(count):
        path = os.path.join(root, split, f"c{label}", f"{i:03d}.png")
        size = (12 + i % 5, 10 + label)  # sizes vary
        Image.new("L", size, value).save(path)
        values[value], value = path, value + 3
  return values


def _in_split(path, split):
  return f"{os.sep}{split}{os.sep}" in path


def _folder_config(image_dir, **overrides):
  return testutil.tiny_config(dataset__name="image_folder",
                              dataset__image_dir=image_dir,
                              dataset__image_size=8,
                              dataset__channels=1,
                              dataset__cache="none",
                              dataset__shuffle_buffer=4,
                              **overrides).dataset


def _file_values(batches):
  """The grey value of each image in `batches` (each image is flat: its mean)."""
  return [
      int(round(float(v) * 255))
      for images_batch, _ in batches
      for v in tf.reduce_mean(images_batch, axis=[1, 2, 3]).numpy()
  ]


class FolderPipelineTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path
    self.values = _write_flat_folder(self.root)

  def test_an_epoch_sees_every_good_file_once(self):
    datasets = data.load(_folder_config(self.root), batch_size=4, seed=1)
    self.assertEqual(["c0", "c1", "c2"], datasets.info.label_names)
    epoch = _file_values(datasets.train.take(6))  # 24 files / 4
    train_values = [v for v in self.values if _in_split(self.values[v], "train")]
    self.assertCountEqual(train_values, epoch)

  def test_a_resumed_pipeline_gives_the_same_batches_without_reading_the_skipped_files(self):
    config = _folder_config(self.root)
    unbroken = _file_values(data.load(config, batch_size=4, seed=1).train.take(5))
    resumed = data.load(config, batch_size=4, seed=1)  # the folder is checked here
    for value in unbroken[:3 * 4]:  # what steps 0-2 trained on: gone now
      os.remove(self.values[value])
    self.assertEqual(unbroken[12:], _file_values(resumed.make_train(None, 3).take(2)))

  def test_two_workers_read_disjoint_halves_of_each_epoch(self):
    datasets = data.load(_folder_config(self.root), batch_size=4, seed=1)
    halves = []
    for pipeline in range(2):
      context = tf.distribute.InputContext(num_input_pipelines=2,
                                           input_pipeline_id=pipeline,
                                           num_replicas_in_sync=2)
      halves.append(_file_values(datasets.make_train(context).take(6)))  # 12 files, by 2
    self.assertEmpty(set(halves[0]) & set(halves[1]))
    self.assertCountEqual(sorted(v for v in self.values if _in_split(self.values[v], "train")),
                          halves[0] + halves[1])

  def test_records_hold_the_same_examples_as_the_files(self):
    records = self.create_tempdir().full_path
    index = image_folder.write_records(self.root,
                                       records,
                                       _folder_config(self.root),
                                       images_per_shard=5)
    self.assertEqual(["c0", "c1", "c2"], index["classes"])
    self.assertLen(index["splits"]["train"]["files"], 5)  # 24 images, 5 per shard
    from_files = data.load(_folder_config(self.root), batch_size=4, seed=1)
    from_records = data.load(_folder_config(records), batch_size=4, seed=1)

    def eval_examples(datasets):
      return sorted(
          zip(_file_values(datasets.eval),
              np.concatenate([y for _, y in datasets.eval]).tolist()))

    self.assertEqual(eval_examples(from_files), eval_examples(from_records))
    self.assertCountEqual(_file_values(from_files.train.take(6)),
                          _file_values(from_records.train.take(6)))

  def test_a_file_damaged_in_the_middle_is_skipped_when_decoded_not_fatal(self):
    damaged = self.values[min(v for v in self.values if _in_split(self.values[v], "test"))]
    with open(damaged, "r+b") as f:
      whole = bytearray(f.read())
      whole[-20:-16] = b"\xff" * 4  # the last IDAT's bytes; the header and IEND stay whole
      f.seek(0)
      f.write(whole)
    self.assertIsNone(images.check_file(damaged, _LIMIT)[0])
    datasets = data.load(_folder_config(self.root), batch_size=4, seed=1)
    evaluated = _file_values(datasets.eval)
    test_values = sorted(v for v in self.values if _in_split(self.values[v], "test"))
    self.assertEqual(test_values[1:], sorted(evaluated))  # all but the damaged one

  def test_bad_files_are_skipped_and_counted(self):
    empty, cut = self.values[10], self.values[13]
    open(empty, "wb").close()
    with open(cut, "rb") as f:
      whole = f.read()
    with open(cut, "wb") as f:
      f.write(whole[:-12])  # without its IEND chunk
    config = _folder_config(self.root, dataset__max_bad_fraction=0.1)
    with self.assertLogs(level="WARNING") as logs:
      datasets = data.load(config, batch_size=4, seed=1)
    self.assertEqual({"train": 2, "eval": 0}, datasets.info.bad_files)
    self.assertEqual(22, datasets.info.train_examples)
    said = "\n".join(logs.output)
    self.assertIn(f"Skipping {empty}: empty file", said)
    self.assertIn(f"Skipping {cut}: truncated PNG", said)
    config.max_bad_fraction = 0.05  # 2 of 24 is over 5 %
    with self.assertRaisesRegex(UserError, "2 of 24 files are unreadable"):
      data.load(config, batch_size=4, seed=1)


class FolderLayoutTest(parameterized.TestCase):
  """Each wrong layout is one UserError naming the folder and the fix."""

  def _layout(self, files):
    root = self.create_tempdir().full_path
    for relative in files:
      path = os.path.join(root, relative)
      os.makedirs(os.path.dirname(path), exist_ok=True)
      if relative.endswith(".png"):
        Image.new("RGB", (9, 9), 70).save(path)
    return root

  @parameterized.named_parameters(
      ("empty_folder", [], "no 'train' split folder"),
      ("no_class_folders", ["train/"], "holds no class folders"),
      ("class_without_images", ["train/a/1.png", "train/b/notes.txt", "test/a/1.png"
                               ], "train/b holds no images"),
      ("missing_eval_split", ["train/a/1.png", "train/b/1.png"], "no 'test' split folder"),
      ("eval_class_unknown", ["train/a/1.png", "train/b/1.png", "test/a/1.png", "test/z/1.png"
                             ], "class folders the training split lacks: z"),
      # It trained to "100 %" and exited 0.
      ("one_class", ["train/a/1.png", "train/a/2.png", "test/a/1.png"
                    ], "train has one class folder \\('a'\\); a classifier needs at least two"),
  )
  def test_wrong_layouts_are_named(self, files, message):
    root = self._layout(files)
    config = _folder_config(root, dataset__holdout_fraction=0.0)
    with self.assertRaisesRegex(UserError, message):
      data.load(config, batch_size=1, seed=0)

  def test_an_evaluation_split_without_some_classes_is_legal_and_logged(self):
    root = self._layout(["train/a/1.png", "train/b/1.png", "train/c/1.png", "test/a/1.png"])
    with self.assertLogs(level="WARNING") as logged:
      datasets = data.load(_folder_config(root), batch_size=1, seed=0)
    self.assertEqual(datasets.info.num_classes, 3)
    self.assertIn("Split 'test' has no images of 2 of the 3 classes (b, c)",
                  "\n".join(logged.output))

  def test_a_class_whose_every_training_file_is_unreadable_is_refused(self):
    root = self._layout(["train/a/1.png", "train/a/2.png", "train/b/1.png", "test/a/1.png"])
    with open(os.path.join(root, "train", "b", "1.png"), "wb") as f:
      f.write(b"not a png")
    config = _folder_config(root, dataset__max_bad_fraction=0.5)
    with self.assertRaisesRegex(UserError, "Class b of split 'train' has no readable images"):
      data.load(config, batch_size=1, seed=0)

  def test_image_dir_that_is_a_file_or_missing_is_named(self):
    path = self.create_tempfile().full_path
    for image_dir, message in ((path, "is not a directory"), (path + "-gone", "")):
      with self.assertRaisesRegex(UserError, message):
        data.load(_folder_config(image_dir), batch_size=1, seed=0)

  def test_the_launcher_ends_a_layout_error_with_exit_2_and_one_line(self):
    root = self._layout(["train/a/1.png", "train/b/"])
    proc = testutil.run_launcher("train", *testutil.image_folder_flags(root, image_size=8),
                                 f"--workdir={self.create_tempdir().full_path}")
    testutil.assert_user_error(self, proc, "holds no images")


class CropPolicyTest(parameterized.TestCase):
  """dataset.crop.policy: auto picks by image size, logs why and records what it chose."""

  @parameterized.parameters((16, 90, "resize"), (127, 90, "resize"), (128, 90, "imagenet"),
                            (224, 30, "imagenet"), (224, 29, "resize"), (128, 3, "resize"))
  def test_auto_picks_by_image_size_and_run_length(self, size, epochs, policy):
    config = testutil.tiny_config(dataset__image_size=size, train__epochs=epochs)
    self.assertEqual(images.crop_policy(config.dataset, epochs), policy)
    with self.assertLogs(level="INFO") as logged:
      resolved = training.with_resolved_crop_policy(config)
    self.assertEqual(resolved.dataset.crop.policy, policy)
    self.assertIn(
        f"dataset.crop.policy=auto -> {policy}: images at {size} px over {epochs} "
        "epochs", "\n".join(logged.output))
    self.assertEqual(config.dataset.crop.policy, "auto")  # the caller's config as it was

  @parameterized.parameters(("square", 1.0), ("resize", None))
  def test_deterministic_policies_train_on_what_evaluation_sees(self, policy, fraction):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    crop = testutil.tiny_config().dataset.crop
    evaluated = images.eval_image(pixels, 16, fraction, 3).numpy()
    for seed in ([1, 2], [3, 4]):  # no randomness left: the same pixels for any seed
      np.testing.assert_array_equal(
          images.train_image(pixels, 16, crop, 3, tf.constant(seed), policy).numpy(), evaluated)

  def test_resize_is_the_whole_image_squeezed_as_keras_reads_a_folder(self):
    pixels = np.random.default_rng(1).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    whole = tf.image.resize(pixels, [16, 16], antialias=True)
    np.testing.assert_array_equal(
        images.eval_image(pixels, 16, None, 3).numpy(),
        np.clip(np.round(whole.numpy()), 0, 255).astype(np.uint8))
    encoded = tf.io.encode_png(pixels)  # from a file: the same pixels
    np.testing.assert_array_equal(
        images.eval_image(encoded, 16, None, 3).numpy(),
        images.eval_image(pixels, 16, None, 3).numpy())

  def test_imagenet_crops_and_flips(self):
    pixels = np.random.default_rng(0).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    crop = testutil.tiny_config().dataset.crop
    crops = {
        images.train_image(pixels, 16, crop, 3, tf.constant([s, 0]), "imagenet").numpy().tobytes()
        for s in range(6)
    }
    self.assertGreater(len(crops), 1)

  def test_each_policy_records_its_evaluation_crop(self):
    config = testutil.tiny_config(dataset__name="image_folder",
                                  dataset__image_size=16,
                                  dataset__source="synthetic")
    root = self.create_tempdir().full_path
    testutil.write_image_folder(root, per_class=3)
    config.dataset.image_dir = root
    self.assertIsNone(data.load(config.dataset, 1, 0).info.eval_crop_fraction)  # auto: resize
    config.dataset.crop.policy = "square"
    self.assertEqual(data.load(config.dataset, 1, 0).info.eval_crop_fraction, 1.0)
    config.dataset.crop.policy = "imagenet"
    self.assertEqual(
        data.load(config.dataset, 1, 0).info.eval_crop_fraction, config.dataset.crop.eval_fraction)


class FolderTrainingTest(absltest.TestCase):

  def test_real_fashion_mnist_pictures_of_mixed_sizes_and_modes_train_at_32(self):
    pixels, labels = testutil.real_fashion_mnist_test_files(self)
    names = [f"class{i}" for i in range(10)]
    root = self.create_tempdir().full_path
    image_folder.write_images(zip(pixels[:2000], labels[:2000]),
                              root,
                              "train",
                              names,
                              mixed=True,
                              seed=1)
    image_folder.write_images(zip(pixels[2000:2500], labels[2000:2500]),
                              root,
                              "test",
                              names,
                              mixed=True,
                              seed=2)
    config = testutil.tiny_config(dataset__name="image_folder",
                                  dataset__image_dir=root,
                                  dataset__image_size=32,
                                  dataset__channels=1,
                                  dataset__crop__area=(0.5, 1.0),
                                  model__name="shallownet",
                                  train__batch_size=32,
                                  train__epochs=3,
                                  train__steps_per_epoch=None,
                                  train__optimizer__name="adam",
                                  train__optimizer__learning_rate=2e-3)
    metrics = training.train_and_evaluate(config, self.create_tempdir().full_path)
    # Chance is 10 %; the same recipe on 60,000 pictures: kmodels/docs/data.md "Measured".
    self.assertGreater(metrics["test_accuracy"], 0.6)

  def test_a_folder_trains_and_its_export_serves_files_as_evaluation_saw_them(self):
    root = self.create_tempdir().full_path
    names = testutil.write_image_folder(root, per_class=12)
    workdir = self.create_tempdir().full_path
    config = testutil.tiny_config(dataset__name="image_folder",
                                  dataset__image_dir=root,
                                  dataset__image_size=16,
                                  model__name="mlp",
                                  train__steps_per_epoch=4)
    metrics = training.train_and_evaluate(config, workdir)
    self.assertEqual({"train": 0, "eval": 0}, metrics["bad_files"])
    with open(os.path.join(workdir, "classification_report.txt")) as f:
      report = f.read()
    for name in names:
      self.assertIn(name, report)
    card = testutil.read_json(os.path.join(testutil.export_of(workdir), "model_card.json"), {})
    self.assertEqual(names, card["label_names"])

    exported = tf.saved_model.load(testutil.export_of(workdir))
    datasets = data.load(config.dataset, batch_size=4, seed=0)
    eval_pixels = np.concatenate(
        [np.round(x.numpy() * 255).astype(np.uint8) for x, _ in datasets.eval])
    test_files = sorted(tf.io.gfile.glob(os.path.join(root, "test", "*", "*")))
    encoded = tf.constant([tf.io.read_file(p).numpy() for p in test_files])
    served = exported.signatures["serving_bytes"](images=encoded)
    evaluated = exported.signatures["serving_default"](images=tf.constant(eval_pixels))
    np.testing.assert_allclose(evaluated["probabilities"], served["probabilities"], atol=1e-6)
    predicted = np.argmax(served["probabilities"], axis=1)
    self.assertEqual([names[i].encode() for i in predicted], list(served["class_name"].numpy()))


if __name__ == "__main__":
  absltest.main()
