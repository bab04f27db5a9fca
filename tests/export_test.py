"""launch.export: a run's model as LiteRT and ONNX files, proven by their own runtimes.

Current lane: the export extra (ai-edge-litert, onnxruntime, tf2onnx) installs only there
(on TF 2.15's lane it would replace numpy and protobuf under TensorFlow). A quickstart run
on a folder of real Fashion-MNIST pictures is exported in every format and quantization;
each file is then run by clients that import nothing of kmodels or TensorFlow (one from a
venv fresh from the registry, on the 10,000 real test images); launch.predict classifies
image files with the files; bad inputs end with exit 2; every registry model family
converts to both formats and the runtimes agree with TensorFlow.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from kmodels import models, precision
from kmodels.data import image_folder
from kmodels.errors import UserError
from kmodels.tools import exporting, predicting, quantization_aware, runtimes
from tests import testutil

current_lane_only = absltest.skipIf(
    testutil.HAS_ESTIMATOR, "the export extra installs on the current lane only (the full "
    "lane's TF 2.15 pins older numpy and protobuf than the runtimes need)")

# A client as a user's device runs it: numpy and the runtime, nothing of kmodels or TF.
_CLIENT = r"""
import json, sys
import numpy as np
model, images = sys.argv[1], np.load(sys.argv[2])
if model.endswith(".onnx"):
  import onnxruntime
  session = onnxruntime.InferenceSession(model)
  probabilities = session.run(None, {session.get_inputs()[0].name: images})[0]
  inputs = [(i.name, i.type) for i in session.get_inputs()]
else:
  from ai_edge_litert.interpreter import Interpreter
  interpreter = Interpreter(model_path=model)
  source, sink = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
  interpreter.resize_tensor_input(source["index"], images.shape)
  interpreter.allocate_tensors()
  interpreter.set_tensor(source["index"], images)   # raw uint8 pixels, as they are
  interpreter.invoke()
  probabilities = interpreter.get_tensor(sink["index"])
  inputs = [(source["name"], str(source["dtype"]), list(source["quantization"]))]
np.save(sys.argv[3], probabilities)
print(json.dumps({"inputs": inputs, "modules": sorted(m for m in sys.modules
                  if m.split(".")[0] in ("tensorflow", "kmodels"))}))
"""


def _fashion_mnist_training_files():
  paths = [
      os.path.join(testutil.FASHION_MNIST_FILES, f"train-{kind}-idx{dims}-ubyte.gz")
      for kind, dims in (("images", 3), ("labels", 1))
  ]
  if not os.path.exists(paths[0]):
    raise unittest.SkipTest(f"{testutil.FASHION_MNIST_FILES} is missing: bash "
                            "launch/fashion_mnist_files.sh installs Debian's "
                            "dataset-fashion-mnist")
  return runtimes.read_idx(paths[0]), runtimes.read_idx(paths[1])


def _file_digests(root):
  """{path under root: sha256 of its bytes} of every file under root."""
  digests = {}
  for directory, _, names in os.walk(root):
    for name in names:
      with open(os.path.join(directory, name), "rb") as f:
        digests[os.path.relpath(os.path.join(directory, name),
                                root)] = hashlib.sha256(f.read()).hexdigest()
  return digests


def _client_venv(path):
  """A fresh venv with the runtimes and numpy from the registry, at the current lane's pins
  (pip's cache makes it a few seconds); its python. Asserts nothing else came with them."""
  with open(os.path.join(testutil.REPO_ROOT, "launch", "lanes", "current.txt")) as f:
    pins = [line.strip() for line in f if line.split("==")[0] in _CLIENT_PACKAGES]
  assert len(pins) == len(_CLIENT_PACKAGES), pins
  subprocess.run([sys.executable, "-m", "venv", path], check=True, timeout=120)
  python = os.path.join(path, "bin", "python")
  # -I: the test's PYTHONPATH (this checkout, kmodels' egg-info) stays out of the client.
  subprocess.run(
      [python, "-I", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pins],
      check=True,
      timeout=600,
      capture_output=True)
  installed = subprocess.run([python, "-I", "-m", "pip", "list", "--format=freeze"],
                             check=True,
                             capture_output=True,
                             text=True).stdout.lower()
  assert "tensorflow" not in installed and "kmodels" not in installed, installed
  return python


_CLIENT_PACKAGES = ("ai-edge-litert", "onnxruntime", "numpy")


def _client(model_path, images):
  """(probabilities, the client's report) of a kmodels- and TF-free process."""
  scratch = tempfile.mkdtemp(prefix="kmodels-client-")
  images_path, out = os.path.join(scratch, "x.npy"), os.path.join(scratch, "y.npy")
  np.save(images_path, images)
  proc = subprocess.run([sys.executable, "-I", "-c", _CLIENT, model_path, images_path, out],
                        cwd=scratch,
                        capture_output=True,
                        text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return np.load(out), json.loads(proc.stdout.strip().splitlines()[-1])


@current_lane_only
class ExportRunTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.workdir = tempfile.mkdtemp(prefix="kmodels-export-")
    # The quickstart (fastcnn and its recipe) on a folder of real Fashion-MNIST pictures
    # (4,000 of its training images; 1,000 more as the folder's test split): a model that
    # classifies clothing (~90 %), so the bars on accuracy compare something real. (tfds on
    # this lane refuses Debian's repacked archives; a folder is read by kmodels itself.)
    cls.image_dir = os.path.join(cls.workdir + "-images")
    images, labels = _fashion_mnist_training_files()
    names = [f"class{i}" for i in range(10)]
    image_folder.write_images(zip(images[:4000], labels[:4000]), cls.image_dir, "train", names)
    image_folder.write_images(zip(images[4000:5000], labels[4000:5000]), cls.image_dir, "test",
                              names)
    cls.train_flags = (
        "train",
        "--config=configs/fashion_mnist_quickstart.py",
        "--config.dataset.name=image_folder",
        f"--config.dataset.image_dir={cls.image_dir}",
        "--config.dataset.image_size=28",
        "--config.dataset.channels=1",
        "--config.dataset.crop.area=(1.0, 1.0)",
        "--config.dataset.crop.eval_fraction=1.0",
        "--config.train.batch_size=64",
        # 3 passes over the 4,000 pictures (the quickstart caps its epochs at
        # 225 steps, 3.6 passes of this folder each).
        "--config.train.steps_per_epoch=62",
        "--config.train.epochs=3")
    proc = testutil.call_launcher(*cls.train_flags, f"--workdir={cls.workdir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cls.version = os.path.join(cls.workdir, "export", "1")
    cls.images = images[-16:]  # not among the folder's
    loaded = tf.saved_model.load(cls.version)
    cls.saved = loaded.signatures["serving_default"](
        images=tf.constant(cls.images))["probabilities"].numpy()

  def _card(self):
    return testutil.read_json(os.path.join(self.version, "model_card.json"), None)

  @parameterized.named_parameters(("litert_float", "litert", "none", "model-none.tflite", 1e-4),
                                  ("litert_int8", "litert", "int8", "model-int8.tflite", None),
                                  ("onnx", "onnx", "none", "model.onnx", 1e-4))
  def test_the_launcher_writes_a_proven_file_a_plain_client_runs(self, fmt, quantize, name,
                                                                 tolerance):
    proc = testutil.call_launcher("export", f"--workdir={self.workdir}", f"--format={fmt}",
                                  f"--quantize={quantize}", "--calibration_images=64")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn(f"Exported {os.path.join(self.version, name)}", proc.stdout)
    (entry,) = [e for e in self._card()["off_tensorflow"] if e["file"] == name]
    self.assertTrue(entry["within_bar"])
    self.assertEqual(entry["bytes"], os.path.getsize(os.path.join(self.version, name)))
    self.assertEqual((entry["format"], entry["quantization"], entry["examples"]),
                     (fmt, quantize, 1000))
    self.assertEqual(entry["input"]["dtype"], "uint8")
    probabilities, report = _client(os.path.join(self.version, name), self.images)
    self.assertEqual(report["modules"], [])
    # int8's softmax comes out in steps of 1/256
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-3 if tolerance else 2e-2)
    if tolerance:  # float files: the SavedModel's probabilities (within its own precision)
      self.assertLessEqual(entry["max_probability_difference"], tolerance)
      # precision=auto trains and serves in bf16 on CPUs that have it: ~1e-2 of rounding.
      np.testing.assert_allclose(probabilities, self.saved, atol=2e-2)
    else:  # int8: raw pixels in (scale 1, zero point 0), close to the SavedModel
      self.assertEqual(report["inputs"][0][1:], ["<class 'numpy.uint8'>", [1.0, 0]])
      self.assertLess(np.max(np.abs(probabilities - self.saved)), 0.1)

  def test_dynamic_and_float16_files_within_their_bar(self):
    parameters = testutil.read_json(os.path.join(self.workdir, "metrics.json"), None)["parameters"]
    for quantize, bytes_per_weight in (("dynamic", 1), ("float16", 2)):
      entry = exporting.export(exporting.Request(self.workdir, "litert", quantize))
      self.assertTrue(entry["within_bar"], entry)
      self.assertLess(entry["bytes"], 1.3 * bytes_per_weight * parameters, quantize)

  def test_a_file_over_the_bar_is_refused_unless_allowed(self):
    workdir = os.path.join(self.create_tempdir().full_path, "run")
    shutil.copytree(self.workdir, workdir)
    version = os.path.join(workdir, "export", "1")
    written = os.path.join(version, "model.onnx")
    if os.path.exists(written):  # another test of the class may have exported it
      os.remove(written)

    def listed():
      card = testutil.read_json(os.path.join(version, "model_card.json"), None)
      return [e for e in card.get("off_tensorflow", []) if e["file"] == "model.onnx"]

    card_before = listed()
    request = exporting.Request(workdir, "onnx")
    with mock.patch.object(exporting, "FLOAT_PROBABILITY", 0.0):  # an unreachable bar
      with self.assertRaisesRegex(
          UserError, r"model.onnx is refused: accuracy .* images\), "
          r"max probability difference .* \(bar 0\)"):
        exporting.export(request)
      self.assertFalse(os.path.exists(written))
      self.assertEqual(listed(), card_before)
      request.allow_drop = True
      entry = exporting.export(request)
    self.assertFalse(entry["within_bar"])
    self.assertTrue(os.path.exists(written))
    self.assertFalse(listed()[0]["within_bar"])

  def test_quantization_aware_fine_tuning_makes_a_proven_int8_file_the_run_untouched(self):
    # ShallowNet, without BatchNorm (which quantization-aware fine-tuning refuses, below).
    workdir = self.create_tempdir().full_path
    proc = testutil.call_launcher(*self.train_flags, f"--workdir={workdir}",
                                  "--config.model.name=shallownet")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    # Where post-training int8 misses its bar, the refusal offers the fine-tuning.
    with mock.patch.object(exporting, "allowed_drop_images", lambda *_: -1):  # unreachable
      for run, offered in ((workdir, True), (self.workdir, False)):  # fastcnn: BatchNorm
        with self.assertRaisesRegex(UserError, "model-int8.tflite is refused") as refused:
          exporting.export(exporting.Request(run, "litert", "int8", calibration_images=64))
        self.assertEqual("add --qat_steps=200 (a copy is fine-tuned" in str(refused.exception),
                         offered)
    checkpoints = _file_digests(os.path.join(workdir, "checkpoints"))
    version = os.path.join(workdir, "export", "1")
    saved = tf.saved_model.load(version).signatures["serving_default"](
        images=tf.constant(self.images))["probabilities"].numpy()
    proc = testutil.call_launcher("export", f"--workdir={workdir}", "--format=litert",
                                  "--quantize=int8", "--qat_steps=20", "--calibration_images=64")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("Quantization-aware fine-tuning: 20 steps", proc.stderr)
    card = testutil.read_json(os.path.join(version, "model_card.json"), None)
    (entry,) = [e for e in card["off_tensorflow"] if e["file"] == "model-int8.tflite"]
    self.assertEqual(entry["quantization_aware_steps"], 20)
    self.assertTrue(entry["within_bar"])
    probabilities, report = _client(os.path.join(version, "model-int8.tflite"), self.images)
    self.assertEqual(report["inputs"][0][1:], ["<class 'numpy.uint8'>", [1.0, 0]])
    self.assertGreater(np.mean(probabilities.argmax(-1) == saved.argmax(-1)), 0.8)
    self.assertEqual(_file_digests(os.path.join(workdir, "checkpoints")), checkpoints)
    # The SavedModel still answers as trained.
    np.testing.assert_allclose(tf.saved_model.load(version).signatures["serving_default"](
        images=tf.constant(self.images))["probabilities"].numpy(),
                               saved,
                               atol=1e-6)
    # The quickstart's fastcnn has BatchNorm: refused by name.
    proc = testutil.call_launcher("export", f"--workdir={self.workdir}", "--format=litert",
                                  "--quantize=int8", "--qat_steps=20")
    testutil.assert_user_error(self, proc, "fastcnn has BatchNorm layers")

  def test_a_rebuild_that_does_not_compute_what_the_savedmodel_does_is_caught(self):
    with mock.patch.object(models, "copy_weights", lambda source, target: 0):  # untrained
      with self.assertRaisesRegex(UserError, "does not compute what its SavedModel does"):
        exporting.export(exporting.Request(self.workdir, "onnx"))

  def test_launch_predict_classifies_files_with_each_file(self):
    files = []
    for i, image in enumerate(self.images[:3]):
      path = os.path.join(self.create_tempdir().full_path, f"{i}.png")
      tf.io.write_file(path, tf.io.encode_png(image))
      files.append(path)
    paths = {name: os.path.join(self.version, name) for name in ("model-none.tflite", "model.onnx")}
    for name, path in paths.items():
      if not os.path.exists(path):
        exporting.export(
            exporting.Request(self.workdir, "onnx" if name.endswith("onnx") else "litert"))
    encoded = [tf.io.read_file(f).numpy() for f in files]
    _, expected = predicting.open_model(self.workdir).classify_files(files, encoded)
    _, onnx = predicting.open_model(paths["model.onnx"]).classify_files(files, encoded)
    np.testing.assert_allclose(onnx, expected, atol=5e-3)
    proc = testutil.call_launcher("predict", f"--model={paths['model-none.tflite']}", "--top_k=1",
                                  *files)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    names = self._card()["label_names"]
    self.assertEqual([
        line.split("1. ")[1].rsplit(" ", 1)[0]
        for line in proc.stdout.splitlines()
        if ": 1. " in line
    ], [names[i] for i in expected.argmax(-1)])

  def test_the_runtime_file_alone_reads_idx_files_and_measures(self):
    path = os.path.join(self.version, "model-none.tflite")
    if not os.path.exists(path):
      exporting.export(exporting.Request(self.workdir, "litert"))
    scratch = self.create_tempdir().full_path
    labels = np.arange(len(self.images), dtype=np.uint8) % 10
    idx = {}  # MNIST's idx layout: magic (dtype, dims), sizes, then the bytes
    for name, array in (("images", self.images[..., 0]), ("labels", labels)):
      idx[name] = os.path.join(scratch, f"{name}.idx")
      with open(idx[name], "wb") as f:
        f.write(
            bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape) +
            array.tobytes())
    alone = shutil.copy(runtimes.__file__, scratch)  # as a device would have it
    proc = subprocess.run(
        [sys.executable, "-I", alone, "--idx", path, idx["images"], idx["labels"]],
        capture_output=True,
        text=True,
        timeout=300)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    self.assertFalse(report["tensorflow_imported"] or report["kmodels_imported"])
    self.assertAlmostEqual(report["accuracy"],
                           float(np.mean(self.saved.argmax(-1) == labels)),
                           delta=1 / 16)
    rows, table = exporting.measure(self.workdir, repeats=5)
    self.assertEqual(rows[0]["model"], "SavedModel (serving_default)")
    self.assertIn("model-none.tflite (ai-edge-litert)", [r["model"] for r in rows])
    self.assertTrue(all(r["latency_ms"] > 0 and r["bytes"] > 0 for r in rows), rows)
    self.assertEqual(testutil.read_text(os.path.join(self.version, "off_tensorflow.md")),
                     table + "\n")

  def test_a_client_fresh_from_the_registry_classifies_real_fashion_mnist(self):
    """The Done-when client: a venv of only the runtimes (from the registry, at this lane's
    pins) and the runtime file runs the int8 and ONNX files on the real test images at the
    SavedModel's accuracy on them, within each bar."""
    images_path, labels_path = testutil.fashion_mnist_test_paths(self)
    scratch = self.create_tempdir().full_path
    python = _client_venv(os.path.join(scratch, "venv"))
    images, labels = testutil.real_fashion_mnist_test_files(self)
    saved = predicting.Predictor(self.version).probabilities(images).argmax(-1)
    saved_accuracy = float(np.mean(saved == labels))
    alone = shutil.copy(runtimes.__file__, scratch)
    for name, fmt, quantize, points in (("model-int8.tflite", "litert", "int8",
                                         exporting.QUANTIZED_ACCURACY_POINTS),
                                        ("model.onnx", "onnx", "none",
                                         exporting.FLOAT_ACCURACY_POINTS)):
      path = os.path.join(self.version, name)
      if not os.path.exists(path):
        exporting.export(exporting.Request(self.workdir, fmt, quantize, calibration_images=64))
      proc = subprocess.run([python, "-I", alone, "--idx", path, images_path, labels_path],
                            capture_output=True,
                            text=True,
                            timeout=300)
      self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
      report = json.loads(proc.stdout.strip().splitlines()[-1])
      self.assertEqual(report["images"], 10000)
      self.assertFalse(report["tensorflow_imported"] or report["kmodels_imported"])
      self.assertLessEqual(
          abs(report["accuracy"] - saved_accuracy) * 100, points, (name, report, saved_accuracy))

  def test_bad_inputs_are_one_line_exit_2(self):
    scratch = self.create_tempdir().full_path
    no_export = os.path.join(scratch, "no_export")
    shutil.copytree(self.workdir, no_export, ignore=shutil.ignore_patterns("export"))
    no_images = os.path.join(scratch, "no_images")  # its training folder is now empty
    shutil.copytree(self.workdir, no_images)
    empty_folder = os.path.join(scratch, "empty_folder")
    shutil.copytree(self.image_dir,
                    empty_folder,
                    ignore=lambda d, names: names
                    if os.path.basename(d).startswith("class") and "train" in d else [])
    config_path = os.path.join(no_images, "config.json")
    config = testutil.read_json(config_path, None)
    config["dataset"]["image_dir"] = empty_folder
    with open(config_path, "w") as f:
      json.dump(config, f)
    damaged = os.path.join(scratch, "damaged")
    shutil.copytree(self.workdir, damaged)
    with open(os.path.join(damaged, "export", "1", "saved_model.pb"), "wb") as f:
      f.write(b"not a SavedModel")
    estimator = os.path.join(scratch, "estimator")  # as an Estimator run's card says
    shutil.copytree(self.workdir, estimator)
    card_path = os.path.join(estimator, "export", "1", "model_card.json")
    card = testutil.read_json(card_path, None)
    card["trainer"] = "keras_estimator"
    with open(card_path, "w") as f:
      json.dump(card, f)
    for flags, message in (([f"--workdir={no_export}", "--format=litert"],
                            "has no export"), ([f"--workdir={estimator}",
                                                "--format=onnx"], "wraps a tf.estimator graph"),
                           ([f"--workdir={damaged}", "--format=onnx"],
                            "cannot be loaded"), ([f"--workdir={self.workdir}", "--format=coreml"],
                                                  "--format=coreml: choose one of"),
                           ([f"--workdir={self.workdir}", "--format=onnx",
                             "--quantize=int8"], "exports float32"),
                           ([f"--workdir={no_images}", "--format=litert",
                             "--quantize=int8"], "holds no images"),
                           ([f"--workdir={self.workdir}", "--format=litert",
                             "--version=7"], "holds no SavedModel")):
      with self.subTest(message=message):
        proc = testutil.call_launcher("export", *flags)
        testutil.assert_user_error(self, proc, message)
    # A bucket that cannot answer: one line for both launchers of these files.
    for launcher, flag in (("export", "--workdir"), ("predict", "--model")):
      with self.subTest(launcher=launcher):
        proc = testutil.call_launcher(
            launcher, f"{flag}=gs://no-such-host.invalid/run",
            *(["--format=litert"] if launcher == "export" else ["--split=test"]))
        testutil.assert_user_error(self, proc, "unreachable")


@current_lane_only
class ArchitectureRunTest(absltest.TestCase):
  """A run of an ImageNet architecture (a backbone nested in the model) exports: its
  SavedModel's weights reach the float32 rebuild (their creation order differs there)."""

  def test_a_mobilenet_run_exports_with_its_weights(self):
    workdir = self.create_tempdir().full_path
    proc = testutil.call_launcher("train", "--config=configs/base.py", f"--workdir={workdir}",
                                  "--config.dataset.source=synthetic",
                                  "--config.dataset.name=fashion_mnist",
                                  "--config.model.name=mobilenet_v2",
                                  "--config.dataset.image_size=32",
                                  "--config.train.steps_per_epoch=2", "--config.train.batch_size=8",
                                  "--config.dataset.synthetic_eval_examples=32")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    entry = exporting.export(exporting.Request(workdir, "litert"))
    self.assertTrue(entry["within_bar"], entry)
    self.assertLessEqual(entry["max_probability_difference"], exporting.FLOAT_PROBABILITY)
    # Its untrained outputs are near uniform, so compare the weights themselves, by name.
    loaded = tf.keras.models.load_model(os.path.join(workdir, "export", "1"), compile=False)
    with precision.policy("float32"):
      rebuilt = models.build_model("mobilenet_v2", (32, 32, 1), 10)
    models.copy_weights(loaded, rebuilt)
    by_name = {w.name: w.numpy() for w in loaded.weights}
    self.assertLen(by_name, len(rebuilt.weights))
    for weight in rebuilt.weights:
      np.testing.assert_array_equal(weight.numpy(), by_name[weight.name], weight.name)


def _batchnorm_layers(layer):
  for inner in getattr(layer, "layers", []):
    yield from _batchnorm_layers(inner)
  if isinstance(layer, tf.keras.layers.BatchNormalization):
    yield layer


def _move_batchnorm_statistics(model):
  """Sets each BatchNorm's scale, offset and statistics as training would have moved them.
  Untrained, the MobileNets at 32 px answer 0.1 for every class and image, which any file
  would match."""
  rng = np.random.default_rng(1)
  for layer in _batchnorm_layers(model):
    for weight in layer.weights:
      positive = "gamma" in weight.name or "variance" in weight.name
      weight.assign(rng.uniform(*((0.5, 1.5) if positive else (-0.2, 0.2)), weight.shape))


@current_lane_only
class RegistryModelsTest(parameterized.TestCase):
  """Every model family converts to both formats and each runtime computes what TensorFlow
  does: the tutorials' networks in the three styles, fastcnn and the ImageNet architectures
  (at 32 px, their smallest size: what converts is the graph, not the image size)."""

  @parameterized.parameters(("fastcnn", (28, 28, 1)), ("shallownet", (28, 28, 1)),
                            ("shallownet_functional", (28, 28, 1)),
                            ("shallownet_subclass", (28, 28, 1)), ("mlp_subclass", (28, 28, 1)),
                            ("cifar_cnn_subclass", (28, 28, 1)), ("resnet_like", (28, 28, 1)),
                            ("mobilenet_v2", (32, 32, 3)), ("mobilenet_v3_large", (32, 32, 3)),
                            ("efficientnet_v2_b0", (32, 32, 3)), ("resnet50", (32, 32, 3)))
  def test_converts_to_both_formats_and_agrees(self, name, shape):
    with precision.policy("float32"):
      model = models.build_model(name, shape, 10)
    _move_batchnorm_statistics(model)
    probabilities = exporting.probabilities_function(model, shape, models.REGISTRY[name].logits)
    images = np.random.default_rng(0).integers(0, 256, (4, *shape), dtype=np.uint8)
    expected = probabilities(tf.constant(images))["probabilities"].numpy()
    self.assertGreater(expected.std(), 1e-3, "uniform outputs would prove nothing")
    scratch = self.create_tempdir().full_path
    for fmt, suffix in (("litert", ".tflite"), ("onnx", ".onnx")):
      path = os.path.join(scratch, name + suffix)
      with open(path, "wb") as f:
        f.write(exporting.convert(probabilities, fmt))
      np.testing.assert_allclose(runtimes.load(path)(images),
                                 expected,
                                 atol=1e-5,
                                 err_msg=f"{name} {fmt}")

  def test_quantization_aware_training_takes_layer_graphs_and_names_a_subclassed_model(self):
    with precision.policy("float32"):
      functional = models.build_model("shallownet_functional", (28, 28, 1), 10)
      subclassed = models.build_model("shallownet_subclass", (28, 28, 1), 10)
    annotated = quantization_aware.annotated(functional, "shallownet_functional")
    self.assertTrue(any("quant" in layer.name for layer in annotated.layers))
    with self.assertRaisesRegex(UserError, "shallownet_subclass is a subclassed model"):
      quantization_aware.annotated(subclassed, "shallownet_subclass")

  def test_an_op_the_converter_lacks_is_named(self):
    inputs = tf.keras.Input((4, 4, 1))
    singular_values = tf.keras.layers.Lambda(lambda t: tf.linalg.svd(t[..., 0], compute_uv=False))(
        inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, "softmax")(singular_values))
    probabilities = exporting.probabilities_function(model, (4, 4, 1), logits=False)
    for fmt, target in (("litert", "LiteRT's builtin op set lacks"),
                        ("onnx", f"cannot map to ONNX opset {exporting.ONNX_OPSET}")):
      with self.subTest(fmt=fmt):
        with self.assertRaisesRegex(UserError, f"TensorFlow ops (that )?.*{target}: Svd\\."):
          exporting.convert(probabilities, fmt)


if __name__ == "__main__":
  absltest.main()
