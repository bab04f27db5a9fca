"""launch.migrate: Estimator model_dirs to Keras, proven equal, served without kmodels.

Full lane: DNNClassifiers written with plain TensorFlow (tests/legacy_estimators.py) in
several shapes (hidden units, activations, batch norm, dropout, 2/3/4/10 classes, feature
keys and shapes), a model_to_estimator model_dir, kmodels' own estimator and
keras_estimator runs; unsupported Estimators are refused with exit 2. Each migrated export
is called from a fresh process that imports nothing of kmodels. Current lane: a model_dir
migrated by the full lane's Python serves here, and launch.migrate itself says why it
needs the full lane.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from kmodels import training
from kmodels.legacy import estimator_reading, feature_columns, migration
from tests import testutil

full_lane_only = absltest.skipUnless(testutil.HAS_ESTIMATOR, "tf.estimator: full lane only")
_FULL_LANE_PYTHON = os.path.join(testutil.REPO_ROOT, ".venv", "bin", "python")
if testutil.HAS_ESTIMATOR:
  from tests import legacy_estimators  # noqa: E402  (needs tf.estimator)

_DNN_SHAPES = (  # name, DNNClassifier settings
    ("relu_10_classes",
     dict(hidden_units=(128, 64), activation="relu", n_classes=10, key="pixels", shape=(784,))),
    ("tanh_batch_norm_binary",
     dict(hidden_units=(16,),
          activation="tanh",
          batch_norm=True,
          n_classes=2,
          key="x",
          shape=(4, 5))),
    ("elu_dropout_3_classes",
     dict(hidden_units=(12, 8, 6),
          activation="elu",
          dropout=0.3,
          n_classes=3,
          key="features",
          shape=(6,))),
    ("leaky_relu_batch_norm_dropout",
     dict(hidden_units=(10, 10),
          activation="leaky_relu",
          batch_norm=True,
          dropout=0.2,
          n_classes=4,
          key="img",
          shape=(3, 3, 2))),
)


def _serve(export_dir, features):
  """serving_default of `export_dir` on `features`, from a fresh TF-only process."""
  outputs, specs = testutil.run_serving_client(sys.executable, export_dir,
                                               {"serving_default": features})
  return outputs, specs


@full_lane_only
class MigrateDnnClassifierTest(parameterized.TestCase):

  @parameterized.named_parameters(*_DNN_SHAPES)
  def test_migrates_equal_and_serves_by_the_feature_key(self, settings):
    model_dir, out = self.create_tempdir().full_path, self.create_tempdir().full_path
    estimator = legacy_estimators.dnn_classifier(model_dir, **settings)
    record = migration.migrate(model_dir, out)
    self.assertEqual(record["kind"], "DNNClassifier")
    self.assertEqual(record["hidden_units"], list(settings["hidden_units"]))
    self.assertEqual(record["activation"], settings["activation"])
    self.assertEqual(record["batch_norm"], settings.get("batch_norm", False))
    self.assertAlmostEqual(record["dropout"] or 0, settings.get("dropout") or 0, places=6)
    self.assertEqual(record["n_classes"], settings["n_classes"])
    self.assertEqual((record["feature_key"], tuple(record["input_shape"])),
                     (settings["key"], settings["shape"]))
    self.assertEqual(record["step"], 40)
    proof = record["proof"]
    self.assertTrue(proof["equal"])
    self.assertLessEqual(proof["max_abs_difference"], migration.MAX_DIFFERENCE)
    self.assertEqual(proof["examples"], migration.RANDOM_CHECK_EXAMPLES)
    # The reference is the Estimator's own predict(), run here: not what the migration
    # recorded of it (proof.npz), which a broken migration could get wrong both ways.
    features = np.random.default_rng(7).standard_normal((64, *settings["shape"])).astype(np.float32)
    expected = legacy_estimators.predict(estimator, settings["key"], features)
    self.assertEqual(expected.shape, (len(features), settings["n_classes"]))
    self.assertGreater(len(set(expected.argmax(-1))), 1, "a model that predicts one class "
                       "proves little")
    outputs, specs = _serve(os.path.join(out, "export", "1"), features)
    self.assertEqual(specs["serving_default"]["inputs"], {settings["key"]: "float32"})
    np.testing.assert_allclose(outputs["serving_default/probabilities"],
                               expected,
                               atol=migration.MAX_DIFFERENCE)
    np.testing.assert_array_equal(outputs["serving_default/class_id"], expected.argmax(-1))
    self.assertTrue(os.path.exists(os.path.join(out, "keras", "saved_model.pb")))
    self.assertTrue(os.path.exists(os.path.join(out, "weights.h5")))
    if settings["n_classes"] in (2, 10):  # a binary and a multi-class head: TF Serving
      # clients of the Estimator's parsing export call the migrated one unchanged.
      records = os.path.join(out, "check.tfrecord")
      legacy_estimators.write_records(records,
                                      legacy_estimators.numeric_examples(settings["key"], features))
      specs = _assert_serve_alike(self,
                                  legacy_estimators.export_parsing(estimator, settings["key"],
                                                                   settings["shape"]),
                                  os.path.join(out, "export", "1"),
                                  records,
                                  signatures=("classification", "predict", "regression"),
                                  warmup=False)
      self.assertEqual(specs["predict"]["inputs"], {"examples": "string"})

  def test_the_launcher_with_a_npz_and_saved_model_cli(self):
    model_dir, out = self.create_tempdir().full_path, self.create_tempdir().full_path
    legacy_estimators.dnn_classifier(model_dir, hidden_units=(32,), key="pixels", shape=(784,))
    check = os.path.join(self.create_tempdir().full_path, "check.npz")
    rng = np.random.default_rng(3)
    np.savez(check,
             pixels=rng.random((100, 784), dtype=np.float32),
             labels=rng.integers(0, 10, 100))
    proc = testutil.run_launcher("migrate", f"--estimator_dir={model_dir}", f"--workdir={out}",
                                 f"--check_data={check}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("Migrated DNNClassifier (step 40)", proc.stdout)
    self.assertIn("over 100 inputs", proc.stdout)
    record = testutil.read_json(os.path.join(out, "migration.json"), None)
    self.assertEqual(record["proof"]["estimator_accuracy"], record["proof"]["keras_accuracy"])
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([
        cli, "show", "--dir",
        os.path.join(out, "export", "1"), "--tag_set", "serve", "--signature_def", "serving_default"
    ],
                           capture_output=True,
                           text=True,
                           timeout=120)
    self.assertEqual(shown.returncode, 0, shown.stderr[-2000:])
    for fragment in ("inputs['pixels']", "(-1, 784)", "outputs['probabilities']",
                     "outputs['class_id']"):
      self.assertIn(fragment, shown.stdout)

  def test_a_keras_model_off_by_more_than_the_tolerance_is_refused(self):
    model_dir, out = self.create_tempdir().full_path, self.create_tempdir().full_path
    legacy_estimators.dnn_classifier(model_dir, hidden_units=(16,), shape=(20,))
    build = estimator_reading.DnnSource.build_keras_model

    def slightly_off(source):
      model = build(source)
      model.get_layer("logits").bias.assign_add(np.full(10, 1e-3, np.float32) * np.arange(10))
      return model

    with mock.patch.object(estimator_reading.DnnSource, "build_keras_model", slightly_off):
      with self.assertRaisesRegex(migration.MigrationNotEqual, "Nothing was exported"):
        migration.migrate(model_dir, out)
    self.assertFalse(os.path.exists(os.path.join(out, "export")))
    record = testutil.read_json(os.path.join(out, "migration.json"), None)
    self.assertFalse(record["proof"]["equal"])
    self.assertGreater(record["proof"]["max_abs_difference"], migration.MAX_DIFFERENCE)

  def test_flags_stand_in_for_a_missing_graph(self):
    model_dir, out = self.create_tempdir().full_path, self.create_tempdir().full_path
    legacy_estimators.dnn_classifier(model_dir,
                                     hidden_units=(8,),
                                     activation="tanh",
                                     key="x",
                                     shape=(2, 3))
    os.remove(os.path.join(model_dir, "graph.pbtxt"))
    with self.assertRaisesRegex(migration.UserError, "--feature_key"):
      migration.migrate(model_dir, out)
    record = migration.migrate(model_dir,
                               out,
                               overrides=estimator_reading.Overrides(activation="tanh",
                                                                     feature_key="x",
                                                                     input_shape=(2, 3)))
    self.assertTrue(record["proof"]["equal"])
    self.assertEqual(record["read_from"]["activation"], "flag")


@full_lane_only
class UnsupportedTest(parameterized.TestCase):

  @parameterized.named_parameters(
      ("linear_combined", "linear_combined_classifier", "DNNLinearCombinedClassifier"),
      ("embedding_column", "embedding_dnn_classifier", "embedding or categorical"),
      ("custom_model_fn", "custom_model_fn_estimator", "a custom model_fn"))
  def test_is_refused_with_what_is_not_supported(self, maker, message):
    model_dir = self.create_tempdir().full_path
    getattr(legacy_estimators, maker)(model_dir)
    out = os.path.join(self.create_tempdir().full_path, "out")
    with self.assertRaisesRegex(migration.UserError, message):
      migration.migrate(model_dir, out)
    self.assertFalse(os.path.exists(out))

  def test_the_launcher_without_columns_or_an_export_exits_2(self):
    model_dir = self.create_tempdir().full_path
    legacy_estimators.linear_combined_classifier(model_dir)  # no export beside it
    proc = testutil.call_launcher("migrate", f"--estimator_dir={model_dir}",
                                  f"--workdir={self.create_tempdir().full_path}")
    testutil.assert_user_error(self, proc, "is a DNNLinearCombined estimator over feature "
                               "columns", "holds no export: pass --feature_columns=FILE.py")


@full_lane_only
class MigrateKerasTest(absltest.TestCase):

  def test_a_model_to_estimator_dir_goes_back_to_its_keras_model(self):
    model_dir, out = self.create_tempdir().full_path, self.create_tempdir().full_path
    json_path = os.path.join(self.create_tempdir().full_path, "model.json")
    estimator = legacy_estimators.model_to_estimator(model_dir, json_path)
    with self.assertRaisesRegex(migration.UserError, "--keras_model"):
      migration.migrate(model_dir, out)
    record = migration.migrate(model_dir,
                               out,
                               overrides=estimator_reading.Overrides(keras_model=json_path))
    self.assertEqual((record["kind"], record["feature_key"], record["step"]),
                     ("model_to_estimator", "features", 20))
    self.assertTrue(record["proof"]["equal"], record["proof"])
    features = np.random.default_rng(7).standard_normal((32, 6)).astype(np.float32)
    expected = legacy_estimators.predict(estimator, "features", features, output="scores")
    outputs, _ = _serve(os.path.join(out, "export", "1"), features)
    np.testing.assert_allclose(outputs["serving_default/probabilities"],
                               expected,
                               atol=migration.MAX_DIFFERENCE)


@full_lane_only
class MigrateKmodelsRunTest(parameterized.TestCase):

  @parameterized.parameters("estimator", "keras_estimator")
  def test_a_kmodels_run_migrates_with_its_classes_and_images(self, trainer):
    workdir = self.create_tempdir().full_path
    config = testutil.tiny_config(trainer=trainer,
                                  model__name="mlp",
                                  dataset__source="synthetic",
                                  estimator__hidden_units=(16,))
    metrics = training.train_and_evaluate(config, workdir)
    out = self.create_tempdir().full_path
    record = migration.migrate(workdir, out)
    proof = record["proof"]
    self.assertTrue(proof["equal"], proof)
    self.assertEqual(proof["examples"], 24)  # the synthetic eval split
    self.assertAlmostEqual(proof["keras_accuracy"], metrics["test_accuracy"], places=6)
    self.assertEqual(proof["keras_accuracy"], proof["estimator_accuracy"])
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    outputs, specs = testutil.run_serving_client(sys.executable, os.path.join(out, "export", "1"), {
        "serving_images": images,
        "serving_default": images.astype(np.float32) / 255
    })
    self.assertIn("class_name", specs["serving_default"]["outputs"])
    np.testing.assert_allclose(outputs["serving_images/probabilities"],
                               outputs["serving_default/probabilities"],
                               atol=1e-6)
    # The run's own export (the Estimator's, wrapped in kmodels' signatures) answers the same.
    original, _ = testutil.run_serving_client(sys.executable, testutil.export_of(workdir),
                                              {"serving_default": images})
    np.testing.assert_allclose(outputs["serving_images/probabilities"],
                               original["serving_default/probabilities"],
                               atol=migration.MAX_DIFFERENCE)


_COLUMNS_FILE = os.path.join(testutil.REPO_ROOT, "tests", "legacy_feature_columns.py")


def _assert_serve_alike(test,
                        estimator_export,
                        migrated_export,
                        records,
                        python=sys.executable,
                        signatures=("serving_default", "classification", "predict", "regression"),
                        warmup=True):
  """Both exports called on the same tf.Examples from fresh processes without kmodels:
  the same signatures, input names, output keys and dtypes, and outputs within 1e-5."""
  sources = {sig: records for sig in signatures}
  expected, expected_specs = testutil.run_serving_client(python, estimator_export, {}, sources)
  actual, actual_specs = testutil.run_serving_client(sys.executable, migrated_export, {}, sources)
  test.assertEqual(actual_specs, expected_specs)
  # The migrated feature-column export adds TF Serving warm-up requests, each replayed.
  replayed = sorted({k.split("/")[1] for k in actual if k.startswith("warmup/")})
  test.assertEqual(replayed, sorted(expected_specs) if warmup else [])
  test.assertEqual(sorted(k for k in actual if not k.startswith("warmup/")), sorted(expected))
  for key, value in expected.items():
    if value.dtype.kind in "SO":
      np.testing.assert_array_equal(actual[key], value, err_msg=key)
    else:
      np.testing.assert_allclose(actual[key], value, atol=migration.MAX_DIFFERENCE, err_msg=key)
  return expected_specs


@full_lane_only
class MigrateOverFeatureColumnsTest(parameterized.TestCase):
  """Canned classifiers over feature columns, trained with plain TF over
  tests/legacy_feature_columns.py, migrated, and served like the Estimator's own export."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.model_dir = tempfile.mkdtemp(prefix="wide_and_deep-",
                                     dir=absltest.get_default_test_tmpdir())
    _, cls.estimator_export = legacy_estimators.canned_over_columns(cls.model_dir, "wide_and_deep",
                                                                    3)

  def _records(self, n_classes):
    path = os.path.join(self.create_tempdir().full_path, "check.tfrecord")
    legacy_estimators.write_records(path, legacy_estimators.column_examples(64, n_classes, seed=5))
    return path

  def test_wide_and_deep_serves_like_the_estimators_export(self):
    out = self.create_tempdir().full_path
    records = self._records(3)
    proc = testutil.call_launcher("migrate", f"--estimator_dir={self.model_dir}",
                                  f"--feature_columns={_COLUMNS_FILE}", f"--workdir={out}",
                                  f"--check_data={records}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn(
        "Migrated DNNLinearCombinedClassifier (step 30) over 16 feature columns "
        "(from --feature_columns)", proc.stdout)
    specs = _assert_serve_alike(self, self.estimator_export, os.path.join(out, "export", "1"),
                                records)
    self.assertEqual(sorted(specs), ["classification", "predict", "serving_default"])
    self.assertEqual(specs["predict"]["inputs"], {"examples": "string"})

  @parameterized.named_parameters(
      ("binary_linear_classifier_with_a_weight_column_sqrtn", "linear", 2, {
          "weight_column": "weight",
          "sparse_combiner": "sqrtn"
      }), ("dnn_classifier_with_a_label_vocabulary", "dnn", 4, {
          "label_vocabulary": ["ant", "bee", "cat", "dog"]
      }), ("baseline_classifier_with_a_label_vocabulary", "baseline", 3, {
          "label_vocabulary": ["ant", "bee", "cat"]
      }), ("wide_and_deep_regressor_of_2_labels", "wide_and_deep", 2, {
          "regressor": True
      }))
  def test_each_head_serves_like_the_estimators_export(self, kind, n_classes, settings):
    # No columns file: the Estimator's export gives the columns (and a label vocabulary)
    # back. It cannot give back the "hours" column's normalizer_fn, so these leave it out.
    model_dir, out = self.create_tempdir().full_path, self.create_tempdir().full_path
    _, estimator_export = legacy_estimators.canned_over_columns(model_dir,
                                                                kind,
                                                                n_classes,
                                                                normalized_hours=False,
                                                                **settings)
    columns_file = None
    if kind == "baseline":  # it reads no columns: the user's file gives only the classes
      columns_file = self.create_tempfile(
          "columns.py",
          (f"def label_vocabulary():\n  return {settings['label_vocabulary']!r}\n")).full_path
    record = feature_columns.migrate(model_dir, out, columns_file)
    self.assertTrue(record["proof"]["equal"], record["proof"])
    self.assertEqual(record["proof"]["examples"], feature_columns.CHECK_EXAMPLES)
    self.assertEqual(record["label_vocabulary"], settings.get("label_vocabulary"))
    self.assertEqual(record["sparse_combiner"], settings.get("sparse_combiner", "sum"))
    if kind != "baseline":
      self.assertEqual(record["columns_from"], f"the Estimator's export {estimator_export}")
    specs = _assert_serve_alike(self, estimator_export, os.path.join(out, "export", "1"),
                                self._records(n_classes))
    if settings.get("regressor"):
      self.assertEqual(record["kind"], "DNNLinearCombinedRegressor")
      self.assertEqual(sorted(specs), ["predict", "regression", "serving_default"])
    elif n_classes == 2:  # the binary head: logistic output and the regression signature
      self.assertIn("regression", specs)
      self.assertIn("logistic", specs["predict"]["outputs"])

  def test_a_baseline_needs_no_columns_and_boosted_trees_are_refused_with_their_route(self):
    model_dir, out = self.create_tempdir().full_path, self.create_tempdir().full_path
    _, estimator_export = legacy_estimators.canned_over_columns(model_dir,
                                                                "baseline",
                                                                1,
                                                                regressor=True)
    proc = testutil.call_launcher("migrate", f"--estimator_dir={model_dir}", f"--workdir={out}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("Migrated BaselineRegressor (step 30) over 0 feature columns", proc.stdout)
    _assert_serve_alike(self, estimator_export, os.path.join(out, "export", "1"), self._records(2))
    trees = self.create_tempdir().full_path
    legacy_estimators.boosted_trees_model_dir(trees)
    proc = testutil.call_launcher("migrate", f"--estimator_dir={trees}",
                                  f"--workdir={self.create_tempdir().full_path}")
    testutil.assert_user_error(self, proc, "BoostedTrees", "TensorFlow Decision Forests")

  def test_generated_check_examples_reach_every_vocabulary_entry_and_bucket_edge(self):
    source = feature_columns.read(self.model_dir, _COLUMNS_FILE)
    parsed = tf.io.parse_example(tf.constant(feature_columns.check_examples(source)),
                                 source.parse_spec())
    colors = set(parsed["color"].values.numpy().astype(str))
    self.assertLessEqual({"red", "green", "blue", "~out-of-vocabulary~"}, colors)
    homes = set(parsed["home"].values.numpy().astype(str))  # from the vocabulary file
    self.assertLessEqual({"fr", "de", "jp", "br", "~out-of-vocabulary~"}, homes)
    ages = set(parsed["age"].numpy().ravel().tolist())
    self.assertLessEqual({20.0, 40.0, 60.0}, ages)
    self.assertTrue(min(ages) < 20 and max(ages) > 60)
    rows_with_city = tf.math.bincount(tf.cast(parsed["city"].indices[:, 0], tf.int32),
                                      minlength=len(ages)).numpy()
    self.assertIn(0, rows_with_city.tolist())  # some examples lack the feature

  @parameterized.named_parameters(  # TF reads the file for its size unless it is given
      ("size_given", "num_oov_buckets=1, vocabulary_size=4",
       r"column 'home' reads its vocabulary from .*moved/countries.txt, which does not exist"),
      ("size_read", "num_oov_buckets=1",
       r"failed to run: ValueError: vocabulary_file in home does not exist. \(moved\? "))
  def test_a_vocabulary_file_that_moved_is_named(self, arguments, message):
    with open(_COLUMNS_FILE) as f:
      moved = f.read().replace('"legacy_countries.txt"',
                               '"moved/countries.txt"').replace("COUNTRIES, num_oov_buckets=1)",
                                                                f"COUNTRIES, {arguments})")
    columns_file = self.create_tempfile("columns.py", moved).full_path
    with self.assertRaisesRegex(migration.UserError, message):
      feature_columns.read(self.model_dir, columns_file)

  def test_what_does_not_fit_the_model_dir_is_one_line_exit_2(self):
    scratch = self.create_tempdir()
    dnn_only = scratch.create_file(
        "dnn_only.py", "import tensorflow as tf\n"
        "def dnn_feature_columns():\n"
        "  return [tf.feature_column.numeric_column('age')]\n")
    broken = scratch.create_file("broken.py", "raise ValueError('no such column kind')\n")
    empty = scratch.create_file("empty.tfrecord", "")
    damaged = scratch.create_file("damaged.tfrecord", "not a record at all")
    graphless = os.path.join(scratch.full_path, "graphless")
    shutil.copytree(self.model_dir, graphless)
    os.remove(os.path.join(graphless, "graph.pbtxt"))
    truncated = os.path.join(scratch.full_path, "truncated")  # a cut checkpoint data file
    shutil.copytree(self.model_dir, truncated)
    (data_file,) = (n for n in os.listdir(truncated) if n.startswith("model.ckpt-30.data-"))
    os.truncate(os.path.join(truncated, data_file), 100)
    binary = scratch.create_file("binary.py", b"\x89PNG\x00\xff", mode="wb")
    strings = scratch.create_file("strings.py", "def linear_feature_columns():\n"
                                  "  return ['age']\n")
    out = os.path.join(scratch.full_path, "out")
    # In this process: each input class's refusal (a UserError, nothing exported).
    for settings, message in ((dict(columns_file=dnn_only.full_path),
                               "defines no linear_feature_columns"),
                              (dict(columns_file=f"{scratch.full_path}/nowhere.py"),
                               "no such file"), (dict(columns_file=_COLUMNS_FILE,
                                                      check_data=empty.full_path),
                                                 "holds no records"),
                              (dict(columns_file=_COLUMNS_FILE, check_data=damaged.full_path),
                               "not a TFRecord file of tf.Examples"),
                              (dict(columns_file=_COLUMNS_FILE, model_dir=graphless),
                               "pass --head=classifier or --head=regressor"),
                              (dict(columns_file=_COLUMNS_FILE,
                                    model_dir=truncated), "cannot be read: it is damaged"),
                              (dict(columns_file=binary.full_path),
                               "failed to run: UnicodeDecodeError"),
                              (dict(columns_file=scratch.full_path),
                               "no such file"), (dict(columns_file=strings.full_path),
                                                 "returns 'age', which is not a "
                                                 "tf.feature_column column"),
                              (dict(estimator_export=scratch.full_path),
                               "holds no saved_model.pb: pass "
                               "--feature_columns=FILE.py")):
      with self.subTest(message=message):
        settings = dict(dict(model_dir=self.model_dir, output_dir=out), **settings)
        with self.assertRaisesRegex(migration.UserError, re.escape(message)):
          feature_columns.migrate(**settings)
        self.assertFalse(os.path.exists(os.path.join(out, "export")))
    # Through the launcher: exit 2 with one line, for a failure inside the library, a
    # bucket checked before any work, and a model_dir taken with no flags at all.
    for flags, message in (([
        f"--feature_columns={broken.full_path}"
    ], "failed to run: ValueError"), ([
        "--feature_columns=gs://no-such-host.invalid/columns.py"
    ], "unreachable"), ([], "Column 'hours': its values go through RealDiv before the network (a "
                        "normalizer_fn")):  # no columns file: the export cannot give this one back
      with self.subTest(message=message):
        proc = testutil.call_launcher("migrate", f"--estimator_dir={self.model_dir}",
                                      f"--workdir={out}", *flags)
        testutil.assert_user_error(self, proc, message)
        self.assertFalse(os.path.exists(os.path.join(out, "export")))


class CurrentLaneTest(parameterized.TestCase):

  def test_a_model_dir_migrated_on_the_full_lane_serves_here(self):
    if testutil.HAS_ESTIMATOR:
      self.skipTest("this is the full lane; the current lane's run serves what it migrates")
    if not os.path.exists(_FULL_LANE_PYTHON):
      self.skipTest("no .venv here: `bash launch/setup.sh` makes one")
    model_dir, out = self.create_tempdir().full_path, self.create_tempdir().full_path
    scratch = self.create_tempdir().full_path
    features_path, expected_path = (os.path.join(scratch, n) for n in ("x.npy", "y.npy"))
    features = np.random.default_rng(7).standard_normal((64, 784)).astype(np.float32)
    np.save(features_path, features)
    env = dict(os.environ, PYTHONPATH=testutil.REPO_ROOT)
    for command in ([
        _FULL_LANE_PYTHON, "-m", "tests.legacy_estimators", model_dir, features_path, expected_path
    ], [
        _FULL_LANE_PYTHON, "-m", "launch.migrate", f"--estimator_dir={model_dir}",
        f"--workdir={out}"
    ]):
      proc = subprocess.run(command,
                            cwd=testutil.REPO_ROOT,
                            env=env,
                            capture_output=True,
                            text=True,
                            timeout=600)
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    record = testutil.read_json(os.path.join(out, "migration.json"), None)
    self.assertLessEqual(record["proof"]["max_abs_difference"], migration.MAX_DIFFERENCE)
    outputs, _ = _serve(os.path.join(out, "export", "1"), features)
    np.testing.assert_allclose(outputs["serving_default/probabilities"],
                               np.load(expected_path),
                               atol=migration.MAX_DIFFERENCE)

  @parameterized.named_parameters(
      # Every column kind, from the columns file; then trained on here.
      ("wide_and_deep_classifier", {
          "kind": "wide_and_deep",
          "n_classes": 3
      }, True),
      # A regression head and a Baseline's broadcast bias, migrated with no flags (the
      # binary head and columns read from an export: the full lane's MigrateOverFeature
      # ColumnsTest, served from TF 2.15 processes).
      ("baseline_regressor", {
          "kind": "baseline",
          "n_classes": 1,
          "regressor": True
      }, False))
  def test_a_model_dir_over_feature_columns_migrated_on_the_full_lane_serves_here(
      self, settings, columns_file):
    # The Estimator's own export answers on TF 2.15 (full lane, a fresh process); the
    # migrated one on this lane's TF, to the same tf.Examples, with the same signatures.
    if testutil.HAS_ESTIMATOR:
      self.skipTest("this is the full lane; the current lane's run serves what it migrates")
    if not os.path.exists(_FULL_LANE_PYTHON):
      self.skipTest("no .venv here: `bash launch/setup.sh` makes one")
    scratch = self.create_tempdir().full_path
    model_dir, out, records = (os.path.join(scratch, n) for n in ("m", "out", "x.tfrecord"))
    env = dict(os.environ, PYTHONPATH=testutil.REPO_ROOT)
    made = subprocess.run([
        _FULL_LANE_PYTHON, "-m", "tests.legacy_estimators", "canned",
        json.dumps(settings), model_dir, records
    ],
                          cwd=testutil.REPO_ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
    self.assertEqual(made.returncode, 0, made.stderr[-3000:])
    columns = [f"--feature_columns={_COLUMNS_FILE}"] if columns_file else []
    migrated = subprocess.run([
        _FULL_LANE_PYTHON, "-m", "launch.migrate", f"--estimator_dir={model_dir}",
        f"--workdir={out}", *columns
    ],
                              cwd=testutil.REPO_ROOT,
                              env=env,
                              capture_output=True,
                              text=True,
                              timeout=600)
    self.assertEqual(migrated.returncode, 0, migrated.stderr[-3000:])
    export = json.loads(made.stdout.strip().splitlines()[-1])["export"]
    _assert_serve_alike(self,
                        export,
                        os.path.join(out, "export", "1"),
                        records,
                        python=_FULL_LANE_PYTHON)
    if columns_file:
      self._trains_on_here(out, records)

  def _trains_on_here(self, workdir, records):
    """Rebuilt here from the workdir and the columns file, the Keras model answers as its
    export does; one fit step moves its weights and a new export of it answers."""
    model, source = feature_columns.load_keras_model(workdir, _COLUMNS_FILE)
    serialized = tf.constant(list(tf.data.TFRecordDataset(records).as_numpy_iterator()))
    features = feature_columns.parse(source.parse_spec(), serialized)
    served = tf.saved_model.load(os.path.join(workdir, "export",
                                              "1")).signatures["predict"](examples=serialized)
    np.testing.assert_allclose(model(features).numpy(),
                               served["logits"].numpy(),
                               atol=migration.MAX_DIFFERENCE)
    labels = tf.io.parse_example(serialized, {"label": tf.io.FixedLenFeature([1], tf.int64)})
    before = [w.numpy().copy() for w in model.trainable_weights]
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss=source.head().loss())
    model.fit(features, labels["label"], batch_size=64, epochs=1, verbose=0)
    moved = {
        w.name
        for w, old in zip(model.trainable_weights, before)
        if not np.array_equal(w.numpy(), old)
    }
    self.assertTrue(any("logits/kernel" in n for n in moved), moved)
    self.assertTrue(any("linear_bias" in n for n in moved), moved)
    retrained = os.path.join(workdir, "retrained")
    feature_columns.export_for_serving(source, model, retrained, list(serialized.numpy()))
    outputs, _ = testutil.run_serving_client(sys.executable, retrained, {}, {"predict": records})
    self.assertTrue(np.all(np.isfinite(outputs["predict/probabilities"])))
    self.assertGreater(np.max(np.abs(outputs["predict/logits"] - served["logits"].numpy())), 1e-4,
                       "the retrained export answers as before training")

  def test_launch_migrate_says_it_needs_the_full_lane(self):
    if testutil.HAS_ESTIMATOR:
      self.skipTest("the full lane migrates")
    proc = testutil.call_launcher("migrate", f"--estimator_dir={self.create_tempdir()}",
                                  f"--workdir={self.create_tempdir()}")
    testutil.assert_user_error(self, proc, "needs tf.estimator", "full lane")


if __name__ == "__main__":
  absltest.main()
