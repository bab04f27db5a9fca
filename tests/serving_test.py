"""The serving export, proved from outside: clients that import nothing of kmodels.

Each check runs a fresh Python process (TensorFlow only, started outside the repository)
or `saved_model_cli` against an export, and compares what it answers with what the model
predicted in this process or with the run's metrics.json.
"""

import io
import json
import os
import subprocess
import sys
import tempfile
import textwrap

from absl.testing import absltest
from absl.testing import parameterized
import hypothesis
from hypothesis import strategies as st
import numpy as np
from PIL import Image
import tensorflow as tf

from tests import testutil
from kmodels import data, models, precision, serving, training
from kmodels.workdir import Workdir, current_export


def _encode(image, format_name):
  buffer = io.BytesIO()
  Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(buffer,
                                                                             format=format_name)
  return buffer.getvalue()


# The export's contract: every version answers on these three signatures.
_SIGNATURES = ("serving_default", "serving_float", "serving_bytes")


class ExportTest(parameterized.TestCase):

  @parameterized.parameters(("float32", "shallownet"), ("mixed_bfloat16", "shallownet"),
                            ("mixed_float16", "cnnblocks"), ("float32", "cnnblocks"))
  def test_every_signature_answers_what_the_model_predicts(self, policy, name):
    info = data.DatasetInfo("test", (28, 28, 1), 10, [f"class{i}" for i in range(10)], 8, 8)
    export_dir = os.path.join(self.create_tempdir().full_path, "export")
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    with precision.policy(policy):
      model = models.build_model(name, info.image_shape, info.num_classes)
      expected = tf.cast(model(data.scale_pixels(images), training=False), tf.float32)
      logits = models.REGISTRY[name].logits
      expected = (tf.nn.softmax(expected) if logits else expected).numpy()
      serving.export_keras(model,
                           info,
                           serving.Slot(export_dir, 7),
                           serving.Card(policy, "fit", name, 0.5, {}),
                           logits=logits,
                           warmup_images=images[:2])
    png = [_encode(i, "PNG") for i in images]
    outputs, specs = testutil.run_serving_client(
        sys.executable, export_dir, {
            "serving_default": images,
            "serving_float": images.astype(np.float32),
            "serving_bytes": np.array(png, dtype=object).astype(bytes)
        })
    atol = 1e-5 if policy == "float32" else 1e-3
    for signature in _SIGNATURES:
      np.testing.assert_allclose(outputs[f"{signature}/probabilities"], expected, atol=atol)
      np.testing.assert_array_equal(outputs[f"{signature}/class_id"], expected.argmax(-1))
      self.assertEqual([n.decode() for n in outputs[f"{signature}/class_name"]],
                       [f"class{i}" for i in expected.argmax(-1)])
    self.assertEqual(
        specs["serving_default"], {
            "inputs": {
                "images": "uint8"
            },
            "outputs": {
                "probabilities": "float32",
                "class_id": "int64",
                "class_name": "string"
            }
        })
    self.assertEqual(specs["serving_float"]["inputs"], {"images": "float32"})
    self.assertEqual(specs["serving_bytes"]["inputs"], {"images": "string"})
    card = serving.read_card(export_dir)
    self.assertEqual((card["training_precision"], card["input"]["dtype"], card["version"]),
                     (policy, "uint8", 7))
    # TF Serving's warm-up file: one request per signature, read with TF Serving's own
    # protos by the client and replayed: each answers for the images it was built from.
    for signature in _SIGNATURES:
      np.testing.assert_allclose(outputs[f"warmup/{signature}/probabilities"],
                                 expected[:2],
                                 atol=atol)

  def test_real_png_and_jpeg_files_of_another_size_and_colour(self):
    info = data.DatasetInfo("test", (28, 28, 1), 10, [str(i) for i in range(10)], 8, 8)
    export_dir = os.path.join(self.create_tempdir().full_path, "export")
    model = models.build_model("mlp", info.image_shape, info.num_classes)
    serving.export_keras(model,
                         info,
                         serving.Slot(export_dir, 1),
                         serving.Card("float32", "fit", "mlp", None, {}),
                         logits=False,
                         warmup_images=np.zeros((1, 28, 28, 1), np.uint8))
    rgb = np.random.default_rng(1).integers(0, 256, (56, 56, 3), dtype=np.uint8)
    grey = np.asarray(Image.fromarray(rgb).convert("L").resize((28, 28), Image.Resampling.BILINEAR))
    files = [_encode(rgb, "PNG"), _encode(rgb, "JPEG")]
    outputs, _ = testutil.run_serving_client(
        sys.executable, export_dir, {
            "serving_bytes": np.array(files, dtype=object).astype(bytes),
            "serving_default": np.stack([grey[..., None]] * 2)
        })
    self.assertEqual(outputs["serving_bytes/probabilities"].shape, (2, 10))
    # Decoded to one channel and resized inside: close to the same image done by hand.
    np.testing.assert_allclose(outputs["serving_bytes/probabilities"],
                               outputs["serving_default/probabilities"],
                               atol=0.05)


# What an export directory may hold: versions with or without a SavedModel (damaged,
# being copied), exports killed mid-write, and whatever else people put there.
_EXPORT_ENTRY = st.one_of(
    st.tuples(st.integers(0, 10**12).map(str), st.booleans()),
    st.tuples(st.integers(0, 99).map(lambda n: f"{serving.INCOMPLETE}{n}"), st.booleans()),
    st.tuples(st.sampled_from(["latest", "v2", "1.5", "-3", "model_card.json", "00x"]),
              st.booleans()))


class VersionLayoutTest(absltest.TestCase):

  @hypothesis.given(st.lists(_EXPORT_ENTRY, max_size=8, unique_by=lambda e: e[0]))
  @hypothesis.settings(max_examples=40, deadline=None, derandomize=True)
  def test_the_current_version_is_the_highest_complete_one_and_new_ones_go_above_all(self, entries):
    root = tempfile.mkdtemp(prefix="kmodels-versions-")
    for name, complete in entries:
      os.makedirs(os.path.join(root, name))
      if complete:
        open(os.path.join(root, name, "saved_model.pb"), "wb").close()
    complete = [int(n) for n, done in entries if n.isdigit() and done]
    expected = os.path.join(root, str(max(complete))) if complete else None
    self.assertEqual(expected, current_export(root))
    with serving.new_version(root) as slot:
      open(os.path.join(slot.path, "saved_model.pb"), "wb").close()
    numbers = [int(n.rpartition("-")[2]) for n, _ in entries if n.rpartition("-")[2].isdigit()]
    self.assertGreater(slot.version, max(numbers, default=0))
    self.assertEqual(os.path.join(root, str(slot.version)), current_export(root))
    self.assertFalse([n for n in os.listdir(root) if n.startswith(serving.INCOMPLETE)])

  def test_an_empty_or_missing_export_directory_has_no_current_version(self):
    self.assertIsNone(current_export(self.create_tempdir().full_path))
    self.assertIsNone(current_export("/no/such/export"))


class TrainedExportTest(parameterized.TestCase):

  @parameterized.parameters(("fit", "mixed_bfloat16"), ("custom_loop", "float32"))
  def test_accuracy_over_the_test_split_equals_metrics_json(self, trainer, policy):
    config = testutil.tiny_config(dataset__source="synthetic",
                                  trainer=trainer,
                                  precision=policy,
                                  train__epochs=2)
    workdir = Workdir(self.create_tempdir().full_path)
    metrics = training.train_and_evaluate(config, workdir.root)
    datasets = data.load(config.dataset, config.train.batch_size, config.train.seed)
    batches = list(datasets.eval.as_numpy_iterator())
    images = np.round(np.concatenate([x for x, _ in batches]) * 255).astype(np.uint8)
    labels = np.concatenate([y for _, y in batches])
    export = testutil.export_of(workdir.root)
    outputs, _ = testutil.run_serving_client(sys.executable, export, {"serving_default": images})
    accuracy = float(np.mean(outputs["serving_default/class_id"] == labels))
    self.assertAlmostEqual(accuracy, metrics["test_accuracy"], delta=0.001)
    self.assertEqual(serving.read_card(export)["test_accuracy"], metrics["test_accuracy"])
    # The warm-up requests are the run's first evaluation images.
    np.testing.assert_array_equal(outputs["warmup/serving_default/class_id"],
                                  outputs["serving_default/class_id"][:serving.WARMUP_IMAGES])

  def test_saved_model_cli_runs_the_export_on_a_npy_of_uint8_images(self):
    workdir = Workdir(self.create_tempdir().full_path)
    training.train_and_evaluate(testutil.tiny_config(dataset__source="synthetic"), workdir.root)
    scratch = self.create_tempdir().full_path
    images = np.random.default_rng(2).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    np.save(os.path.join(scratch, "images.npy"), images)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    proc = subprocess.run([
        cli, "run", "--dir",
        testutil.export_of(workdir.root), "--tag_set", "serve", "--signature_def",
        "serving_default", "--inputs", f"images={scratch}/images.npy", "--outdir",
        os.path.join(scratch, "out")
    ],
                          capture_output=True,
                          text=True,
                          timeout=300)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    probabilities = np.load(os.path.join(scratch, "out", "probabilities.npy"))
    class_id = np.load(os.path.join(scratch, "out", "class_id.npy"))
    self.assertEqual(probabilities.shape, (4, 10))
    np.testing.assert_array_equal(class_id, probabilities.argmax(-1))
    show = subprocess.run([
        cli, "show", "--dir",
        testutil.export_of(workdir.root), "--tag_set", "serve", "--signature_def", "serving_default"
    ],
                          capture_output=True,
                          text=True,
                          timeout=300)
    self.assertIn("DT_UINT8", show.stdout)
    self.assertIn("class_name", show.stdout)


class PredictAndEvaluateLauncherTest(absltest.TestCase):
  """launch.predict and launch.evaluate as users run them, on one trained run each."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = tempfile.mkdtemp(prefix="kmodels-serving-")
    train = ("train", "--config=configs/base.py", f"--workdir={cls.workdir}",
             "--config.dataset.source=synthetic", "--config.dataset.name=fashion_mnist",
             "--config.model.name=mlp", "--config.train.steps_per_epoch=5",
             "--config.trainer=custom_loop")
    # The same command twice: the second resumes the finished run and exports version 2.
    # A version that was being written when its export was killed is left behind too.
    for _ in range(2):
      proc = testutil.call_launcher(*train)
      assert proc.returncode == 0, proc.stderr[-3000:]
      os.makedirs(os.path.join(cls.workdir, "export", "incomplete-9", "variables"))
    cls.metrics = testutil.read_json(os.path.join(cls.workdir, "metrics.json"), None)

  def test_each_export_adds_a_version_and_the_highest_is_current(self):
    export = os.path.join(self.workdir, "export")
    self.assertEqual(sorted(os.listdir(export)), ["1", "10", "incomplete-9"])
    self.assertEqual(os.path.join(export, "10"), Workdir(self.workdir).current_export())
    for version in ("1", "10"):
      card = testutil.read_json(os.path.join(export, version, "model_card.json"), None)
      self.assertEqual(card["version"], int(version))
      self.assertTrue(os.path.exists(os.path.join(export, version, *serving.WARMUP_REQUESTS)))
    # launch.predict serves the highest version of a workdir or export/, or the one named.
    for model, served in ((self.workdir, 10), (export, 10), (f"{export}/1", 1)):
      proc = testutil.call_launcher("predict", f"--model={model}", "--describe")
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      self.assertEqual(json.loads(proc.stdout)["version"], served)
    proc = testutil.call_launcher("predict", f"--model={self.workdir}", "--split=test[:4]")
    self.assertIn(f"Model: {os.path.join(export, '10')}\n", proc.stdout)

  def test_a_training_run_writes_its_confusion_matrix(self):
    with open(os.path.join(self.workdir, "confusion_matrix.png"), "rb") as f:
      self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")

  def test_predict_files_of_any_size_and_mode_and_skips_what_is_no_image(self):
    images = self.create_tempdir().full_path
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 256, (28, 28),
                                 dtype=np.uint8)).save(os.path.join(images, "grey.png"))
    Image.fromarray(rng.integers(0, 256, (64, 48, 3),
                                 dtype=np.uint8)).save(os.path.join(images, "colour.jpg"))
    self.create_tempfile(os.path.join(images, "notes.txt"), "not an image")
    # A PNG whose header and end are right but whose pixel data is noise: only the
    # decoder can tell, and it fails that file alone.
    with open(os.path.join(images, "grey.png"), "rb") as f:
      whole = f.read()
    noisy = whole[:60] + rng.bytes(len(whole) - 72) + whole[-12:]
    self.create_tempfile(os.path.join(images, "noisy.png"), noisy, mode="wb")
    output = os.path.join(self.create_tempdir().full_path, "predictions.json")
    # A real process (predict's output streams as a shell sees them); other launcher runs
    # of this class are in-process (testutil.call_launcher).
    proc = testutil.run_launcher("predict", f"--model={self.workdir}", "--top_k=2",
                                 f"--output={output}", images)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("notes.txt: not an image", proc.stderr)
    self.assertIn("noisy.png: does not decode", proc.stderr)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(images)]
    self.assertLen(lines, 2)
    self.assertRegex(lines[0], r"colour.jpg: 1\. \S+ 0\.\d{4}  2\. \S+ 0\.\d{4}$")
    rows = testutil.read_json(output, None)
    self.assertEqual([len(r["top_k"]) for r in rows], [2, 2])
    best, second = rows[0]["top_k"]
    self.assertGreaterEqual(best["probability"], second["probability"])
    # What predict printed is what a server answers for the same file bytes.
    files = []
    for name in ("colour.jpg", "grey.png"):
      with open(os.path.join(images, name), "rb") as f:
        files.append(f.read())
    served, _ = testutil.run_serving_client(sys.executable, testutil.export_of(
        self.workdir), {"serving_bytes": np.array(files, dtype=object).astype(bytes)})
    for row, probabilities in zip(rows, served["serving_bytes/probabilities"]):
      self.assertEqual(row["top_k"][0]["class_id"], int(probabilities.argmax()))
      self.assertAlmostEqual(row["top_k"][0]["probability"], float(probabilities.max()), places=6)

  def test_predict_with_nothing_readable_exits_2(self):
    not_image = self.create_tempfile("x.png", "text, not a PNG").full_path
    proc = testutil.call_launcher("predict", f"--model={self.workdir}", not_image)
    testutil.assert_user_error(self, proc, "could be read as an image")

  def test_predict_a_split_reports_the_runs_accuracy_and_describe_prints_the_card(self):
    csv_path = os.path.join(self.create_tempdir().full_path, "p.csv")
    proc = testutil.call_launcher("predict", f"--model={self.workdir}", "--split=test",
                                  f"--output={csv_path}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    accuracy = float(proc.stdout.split("accuracy ")[1].split()[0])
    self.assertAlmostEqual(accuracy, self.metrics["test_accuracy"], delta=0.001)
    self.assertIn("(label: ", proc.stdout)
    with open(csv_path) as f:
      self.assertEqual(f.readline().strip(), "source,rank,class,class_id,probability,label")
    proc = testutil.call_launcher("predict", f"--model={self.workdir}/export", "--describe")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    card = json.loads(proc.stdout)
    self.assertEqual((card["dataset"], card["input"]["dtype"], card["trainer"]),
                     ("fashion_mnist", "uint8", "custom_loop"))
    self.assertIn("Ankle boot", card["label_names"])

  def test_evaluate_latest_and_best_checkpoints(self):
    proc = testutil.run_launcher("evaluate", f"--workdir={self.workdir}")  # a real process
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    written = testutil.read_json(os.path.join(self.workdir, "evaluation", "test", "metrics.json"),
                                 None)
    self.assertAlmostEqual(written["accuracy"], self.metrics["test_accuracy"], delta=1e-6)
    self.assertAlmostEqual(written["loss"], self.metrics["test_loss"], delta=1e-4)
    for name in ("classification_report.txt", "confusion_matrix.png"):
      self.assertTrue(os.path.exists(os.path.join(self.workdir, "evaluation", "test", name)))
    proc = testutil.call_launcher("evaluate", f"--workdir={self.workdir}", "--checkpoint=best")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("checkpoints/best/best-1", proc.stdout)

  def test_evaluate_mistakes_are_one_message(self):
    proc = testutil.call_launcher("evaluate", f"--workdir={self.workdir}",
                                  "--checkpoint=/no/such/ckpt-3")
    testutil.assert_user_error(self, proc, "no checkpoint there")
    proc = testutil.call_launcher("evaluate", f"--workdir={self.create_tempdir().full_path}")
    testutil.assert_user_error(self, proc, "holds no run (no config.json)")


_FULL_LANE_PYTHON = os.path.join(testutil.REPO_ROOT, ".venv", "bin", "python")
_EXPORT_ON_THIS_LANE = textwrap.dedent("""
    import sys
    from kmodels import runtime
    runtime.configure()
    import numpy as np
    import tensorflow as tf
    from kmodels import data, models, serving
    info = data.DatasetInfo("test", (28, 28, 1), 10, [str(i) for i in range(10)], 8, 8)
    model = models.build_model("shallownet", info.image_shape, info.num_classes)
    images = np.random.default_rng(3).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    np.save(sys.argv[2], model(data.scale_pixels(images), training=False).numpy())
    np.save(sys.argv[3], images)
    serving.export_keras(model, info, serving.Slot(sys.argv[1], 1),
                         serving.Card("float32", "fit", "x", None, {}), logits=False,
                         warmup_images=images)
    print(tf.__version__)
""")


class CrossLaneTest(absltest.TestCase):

  def test_an_export_of_the_full_lane_serves_on_this_lane(self):
    if tf.__version__.startswith("2.15"):
      self.skipTest("this is the full lane; the current lane's run loads its export")
    if not os.path.exists(_FULL_LANE_PYTHON):
      self.skipTest("no .venv here: `bash launch/setup.sh` makes one")
    scratch = self.create_tempdir().full_path
    export_dir, expected, images = (
        os.path.join(scratch, n) for n in ("export", "expected.npy", "images.npy"))
    proc = subprocess.run(
        [_FULL_LANE_PYTHON, "-c", _EXPORT_ON_THIS_LANE, export_dir, expected, images],
        cwd=testutil.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=testutil.REPO_ROOT))
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertTrue(proc.stdout.strip().startswith("2.15"))
    outputs, _ = testutil.run_serving_client(sys.executable, export_dir,
                                             {"serving_default": np.load(images)})
    np.testing.assert_allclose(outputs["serving_default/probabilities"],
                               np.load(expected),
                               atol=1e-5)


if __name__ == "__main__":
  absltest.main()
