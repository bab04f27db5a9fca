"""Bad input to predict, evaluate and migrate, by class: each member ends as a UserError.

Classes: a damaged SavedModel (any file of it cut, overwritten or gone), image files that
must not be decoded (decompression bombs, cut files, wrong formats, empty files), and
split specs that select nothing (malformed, unknown names, empty slices), Vertex AI's
directories and the GCS emulator's address set wrong.
"""

import json
import os
import shutil
from unittest import mock

from absl.testing import absltest
import hypothesis
from hypothesis import strategies as st
import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import base
from tests import testutil
from kmodels import data, storage, workdir
from kmodels.data import sources
from kmodels.errors import UserError
from kmodels.storage import emulator
from kmodels.tools import evaluation, predicting

_SETTINGS = hypothesis.settings(max_examples=20, deadline=None, derandomize=True)


class _Classifier(tf.Module):
  """The smallest export with a kmodels-style uint8 `images` signature."""

  def __init__(self):
    super().__init__()
    self.weights = tf.Variable(tf.random.stateless_normal([12, 3], seed=[1, 2]))

  @tf.function(input_signature=[tf.TensorSpec([None, 2, 2, 3], tf.uint8, name="images")])
  def serve(self, images):
    flat = tf.reshape(tf.cast(images, tf.float32) / 255, [-1, 12])
    return {"probabilities": tf.nn.softmax(flat @ self.weights)}


def _damage(path, how, fraction):
  if how == "cut":
    with open(path, "r+b") as f:
      f.truncate(int(os.path.getsize(path) * fraction))
  elif how == "overwritten":
    with open(path, "wb") as f:
      f.write(
          np.random.default_rng(int(fraction * 1000)).bytes(
              max(1, int(os.path.getsize(path) * fraction))))
  else:
    os.remove(path)


class DamagedSavedModelTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.whole = os.path.join(absltest.get_default_test_tmpdir(), "export")
    model = _Classifier()
    tf.saved_model.save(model, cls.whole, signatures={"serving_default": model.serve})

  def test_the_whole_export_loads(self):
    predictor = predicting.Predictor(self.whole)
    self.assertEqual((2, 2, 3), predictor.image_shape)

  @hypothesis.given(
      st.sampled_from([
          "saved_model.pb", "variables/variables.index", "variables/variables.data-00000-of-00001"
      ]), st.sampled_from(["cut", "overwritten", "gone"]), st.floats(0.0, 0.9))
  @_SETTINGS
  def test_any_damaged_file_is_a_user_error_naming_the_export(self, name, how, fraction):
    damaged = self.create_tempdir().full_path + "/export"
    shutil.copytree(self.whole, damaged)
    _damage(os.path.join(damaged, name), how, fraction)
    with self.assertRaises(UserError) as refused:
      predicting.Predictor(damaged)
    self.assertIn(damaged, str(refused.exception))
    self.assertRegex(str(refused.exception), "cannot be loaded: it is damaged|No SavedModel at")


class UndecodableImagesTest(absltest.TestCase):
  """launch.predict meets the files image folders meet, and refuses them the same way."""

  def _write(self, name, payload):
    path = os.path.join(self.directory, name)
    with open(path, "wb") as f:
      f.write(payload)
    return path

  def setUp(self):
    super().setUp()
    self.directory = self.create_tempdir().full_path
    self.good = os.path.join(self.directory, "good.png")
    Image.new("RGB", (5, 7), (10, 200, 30)).save(self.good)

  @hypothesis.given(st.integers(2_000, 100_000), st.integers(2_000, 100_000))
  @_SETTINGS
  def test_a_decompression_bomb_is_refused_by_its_header_and_the_rest_predicted(
      self, width, height):
    bomb = self._write("bomb.png", testutil.png_declaring(width, height))
    with self.assertLogs(level="ERROR") as logs:
      sources_read, encoded = predicting.read_files([self.directory], 1_000_000)
    self.assertEqual([self.good], sources_read)
    with open(self.good, "rb") as f:
      self.assertEqual([f.read()], encoded)
    self.assertIn(f"{bomb}: declares {width}x{height}", "\n".join(logs.output))
    os.remove(bomb)

  def test_every_bad_class_is_named_and_all_bad_is_a_user_error(self):
    with open(self.good, "rb") as f:
      whole = f.read()
    os.remove(self.good)
    bad = {
        "cut.png": whole[:-12],
        "empty.jpg": b"",
        "noise.gif": os.urandom(300),
        "bomb.png": testutil.png_declaring(30_000, 30_000)
    }
    for name, payload in bad.items():
      self._write(name, payload)
    Image.new("RGB", (4, 4)).save(os.path.join(self.directory, "photo.tiff"))
    with self.assertLogs(level="ERROR") as logs, self.assertRaisesRegex(
        UserError, "could be read as an image"):
      predicting.read_files([self.directory], 1_000_000)
    said = "\n".join(logs.output)
    for fragment in ("cut.png: truncated PNG", "empty.jpg: empty file", "noise.gif: not an "
                     "image", "bomb.png: declares 30000x30000", "photo.tiff: a TIFF image"):
      self.assertIn(fragment, said)


_SPLIT_TEXT = st.text(alphabet="testrainvld[]:%-+0123456789 ", min_size=0, max_size=14)


class SplitSpecTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.data_dir = os.path.join(absltest.get_default_test_tmpdir(), "tfds")
    cls.builder = tfds.testing.DummyMnist(data_dir=cls.data_dir)
    cls.builder.download_and_prepare()
    cls.dataset = testutil.tiny_config(dataset__name="dummy_mnist",
                                       dataset__data_dir=cls.data_dir).dataset

  @hypothesis.given(
      st.one_of(
          _SPLIT_TEXT,
          st.sampled_from([
              "test", "train[:50%]", "test[:3]", "test[5:2]", "test[50%:10%]", "test[1000:]",
              "tset", "test[:abc]", "test[::2]", "", "train+test", "test[-3:]"
          ])))
  @hypothesis.settings(max_examples=60, deadline=None, derandomize=True)
  def test_a_split_is_refused_with_a_message_or_selects_examples(self, split):
    try:
      sources.check_split(self.dataset, split, "--split")
    except UserError as e:
      self.assertIn(f"--split={split!r}", str(e))
      return
    self.assertNotEmpty(list(self.builder.as_dataset(split=split).take(1)), split)

  def test_evaluation_pipelines_refuse_a_split_that_selects_nothing(self):
    config = testutil.tiny_config(dataset__name="dummy_mnist", dataset__data_dir=self.data_dir)
    for split, message in (("test[5:2]", "selects no examples"), ("tset",
                                                                  "has the splits test, train"),
                           ("test[:abc]", "not a split tfds understands")):
      with self.subTest(split=split), self.assertRaisesRegex(UserError, message):
        data.load_split(config, split, "--split")
    self.assertEqual(3, data.load_split(config, "test[:3]", "--split").info.eval_examples)

  @hypothesis.given(
      st.one_of(
          _SPLIT_TEXT,
          st.sampled_from([
              "test", "train", "test[:abc]", "test[:10]", "train[:5]+test[-3:]", "validation", "",
              "test[50:]", "test[5:2]"
          ])))
  @_SETTINGS
  def test_a_synthetic_split_is_refused_or_selects_what_it_says(self, split):
    # launch.predict --split='test[:abc]' on a synthetic run predicted 256 random images.
    config = testutil.tiny_config(dataset__source="synthetic", dataset__synthetic_eval_examples=20)
    try:
      datasets = data.load_split(config, split, "--split")
    except UserError as e:
      self.assertIn(f"--split={split!r}", str(e))
      return
    self.assertEqual(sum(len(y) for _, y in datasets.eval), datasets.info.eval_examples)
    self.assertGreater(datasets.info.eval_examples, 0)

  def test_synthetic_slices_select_as_tfds_slices_would(self):
    config = testutil.tiny_config(dataset__source="synthetic", dataset__synthetic_eval_examples=20)
    for split, count in (("test", 20), ("test[:10]", 10), ("train[:5]+test[-3:]", 8), ("test[50%:]",
                                                                                       10)):
      with self.subTest(split=split):
        self.assertEqual(data.load_split(config, split, "--split").info.eval_examples, count)
    test_images = [x.numpy() for x, _ in data.load_split(config, "test", "--split").eval]
    tail = [x.numpy() for x, _ in data.load_split(config, "test[-3:]", "--split").eval]
    self.assertTrue((test_images[-1][-3:] == tail[0]).all())  # the same images, sliced


class OlderRunTest(absltest.TestCase):
  """A workdir recorded by an older kmodels lacks the keys added since."""

  def test_its_missing_keys_take_the_defaults_and_its_own_values_stay(self):
    root = self.create_tempdir().full_path
    recorded = base.get_config().to_dict()
    del recorded["train"]["log_every_seconds"]  # added after the run
    del recorded["dataset"]["crop"]
    recorded["train"]["batch_size"] = 7
    with open(os.path.join(root, "config.json"), "w") as f:
      json.dump(recorded, f)
    config = evaluation.load_config(workdir.Workdir(root))
    defaults = base.get_config()
    self.assertEqual(config.train.log_every_seconds, defaults.train.log_every_seconds)
    self.assertEqual(tuple(config.dataset.crop.area), tuple(defaults.dataset.crop.area))
    self.assertEqual(config.train.batch_size, 7)
    # Not today's default: what such a run did (ImageNet's crops, before the policy key).
    self.assertEqual(config.dataset.crop.policy, "imagenet")
    self.assertNotEqual(defaults.dataset.crop.policy, "imagenet")


class VertexDirectoriesTest(absltest.TestCase):
  """AIP_* directories a stranger might set: roots, a bucket, the workdir itself."""

  @hypothesis.settings(deadline=None, max_examples=40)
  @hypothesis.given(variable=st.sampled_from(
      [workdir.VERTEX_MODEL_DIR, workdir.VERTEX_CHECKPOINT_DIR, workdir.VERTEX_TENSORBOARD_DIR]),
                    value=st.sampled_from([
                        "/", "//", "gs://", "gs://bucket", "gs://bucket/", "/tmp/run", "/tmp/run/"
                    ]))
  def test_a_root_or_the_workdir_itself_is_refused_naming_the_variable(self, variable, value):
    with self.assertRaisesRegex(UserError, f"{variable}=.*cannot hold this run's"):
      workdir.Workdir("/tmp/run", environ={variable: value})

  def test_the_default_workdir_is_the_model_dirs_parent_or_refused(self):
    self.assertEqual(workdir.vertex_default_root({"AIP_MODEL_DIR": "gs://b/job/model/"}),
                     "gs://b/job")
    self.assertIsNone(workdir.vertex_default_root({}))
    for model_dir in ("gs://b/", "/"):  # no parent of its own: refused by Workdir
      root = workdir.vertex_default_root({"AIP_MODEL_DIR": model_dir})
      with self.assertRaises(UserError):
        workdir.Workdir(root, environ={"AIP_MODEL_DIR": model_dir})

  def test_the_filesystem_root_is_no_workdir(self):
    for root in ("/", "//"):
      with self.assertRaisesRegex(UserError, "filesystem root"):
        workdir.Workdir(root).prepare(testutil.tiny_config())


class EmulatorAddressTest(absltest.TestCase):
  """STORAGE_EMULATOR_HOST as a stranger might set it: refused before any proxy starts."""

  @hypothesis.settings(deadline=None, max_examples=40, derandomize=True)
  @hypothesis.given(value=st.one_of(
      st.sampled_from([
          "garbage host", "http://", "https://", "ftp://x:9", "127.0.0.1:abc", "http://[::1",
          "http://127.0.0.1:0", "http://127.0.0.1:99999", "file:///tmp/x", "http://host :4443"
      ]),
      st.text(alphabet=" \t:/", min_size=1, max_size=8).filter(lambda t: t.strip())))
  def test_a_malformed_address_is_a_user_error_naming_the_variable(self, value):
    with mock.patch.dict(os.environ, {storage.EMULATOR_VARIABLE: value}):
      with self.assertRaisesRegex(
          UserError, "STORAGE_EMULATOR_HOST=.* is not an emulator "
          "address: set it like http://127.0.0.1:4443"):
        emulator.route_gs_to_emulator()

  def test_the_launchers_say_it_in_one_line(self):
    proc = testutil.run_launcher("train",
                                 "--config=configs/base.py",
                                 "--workdir=gs://b/x",
                                 env={storage.EMULATOR_VARIABLE: "http://"})
    testutil.assert_user_error(self, proc, "STORAGE_EMULATOR_HOST='http://' is not")


if __name__ == "__main__":
  absltest.main()
