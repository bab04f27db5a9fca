"""Off TensorFlow: a run's export as a LiteRT (.tflite) or ONNX file, proven by its runtime.

`launch.export --workdir=RUN --format=litert|onnx [--quantize=none|dynamic|float16|int8]`
converts the run's current SavedModel version (or --version) and writes the file beside
it, in `export/<N>/`, only once the runtime that will run it agrees with the SavedModel:
a child process that imports neither kmodels nor TensorFlow (ai-edge-litert's interpreter,
onnxruntime) classifies the run's test split (or --split) with the file, and its top-1
accuracy and per-image probabilities are compared with the SavedModel's. The bars:

  float (litert none, onnx): accuracy within 0.2 points, probabilities within 1e-4;
  quantized (dynamic, float16, int8): accuracy within 1.0 point.

Every file takes raw uint8 pixels [N, H, W, C], as the SavedModel's serving_default does,
with the model's preprocessing inside, and returns float32 probabilities [N, classes].
int8 is full-integer post-training quantization calibrated on the run's own training
images (its input quantization is scale 1, zero point 0: the raw pixels themselves).
The model card of the version lists each file with its format, quantization, input and
output, size and measured accuracy.
"""

import contextlib
import dataclasses
import importlib.util
import json
import logging as pylogging
import os
import re
import subprocess
import sys
import tempfile
import time
import typing

from absl import logging
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-direct-tensorflow-import

from kmodels import data, models, precision, progress, reporting, serving, storage
from kmodels.errors import UserError, first_line
from kmodels.tools import evaluation, predicting, quantization_aware, runtimes
from kmodels.workdir import Workdir

FORMATS = ("litert", "onnx")
QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
ONNX_OPSET = 17  # what onnxruntime 1.32 and tf2onnx 1.17 both support fully
FLOAT_ACCURACY_POINTS, FLOAT_PROBABILITY = 0.2, 1e-4
QUANTIZED_ACCURACY_POINTS = 1.0
# float32 rebuild vs a (maybe bf16) SavedModel, mean probability difference: bf16 rounding
# measured up to 0.017 (MobileNetV2 after 2 steps); unmatched weights give ~0.15.
REBUILD_MEAN_DIFFERENCE = 0.05
CALIBRATION_IMAGES = 256  # int8: training images whose activations set the ranges
QAT_STEPS = 200  # what the int8 refusal offers: a few hundred steps recover most int8 loss
CARD_KEY = "off_tensorflow"  # the model card's list of the files beside the SavedModel


@dataclasses.dataclass
class Request:
  workdir: str
  format: str
  quantize: str = "none"
  version: typing.Optional[int] = None
  split: typing.Optional[str] = None
  calibration_images: int = CALIBRATION_IMAGES
  calibration_split: typing.Optional[str] = None  # default: the run's training split
  allow_drop: bool = False
  qat_steps: int = 0  # int8: quantization-aware fine-tuning steps before converting

  @property
  def file_name(self):
    """model-<quantization>.tflite, or model.onnx (ONNX files are float32 only)."""
    return f"model-{self.quantize}.tflite" if self.format == "litert" else "model.onnx"

  def check(self):
    if self.format not in FORMATS:
      raise UserError(f"--format={self.format}: choose one of {', '.join(FORMATS)}.")
    if self.quantize not in QUANTIZATIONS:
      raise UserError(f"--quantize={self.quantize}: choose one of {', '.join(QUANTIZATIONS)}.")
    if self.format == "onnx" and self.quantize != "none":
      raise UserError("--format=onnx exports float32 (--quantize=none); quantized files are "
                      "LiteRT's (--format=litert --quantize=int8).")
    if self.calibration_images < 1:
      raise UserError(f"--calibration_images={self.calibration_images}: at least 1.")
    if self.qat_steps < 0 or (self.qat_steps and self.quantize != "int8"):
      raise UserError(f"--qat_steps={self.qat_steps}: quantization-aware fine-tuning makes "
                      "int8 files (--format=litert --quantize=int8 --qat_steps=200); 0 is off.")


_NEEDS = {"litert": ("ai_edge_litert",), "onnx": ("tf2onnx", "onnx", "onnxruntime")}


def _check_installed(fmt):
  missing = [m for m in _NEEDS[fmt] if importlib.util.find_spec(m) is None]
  if missing:
    raise UserError(f"--format={fmt} needs {', '.join(missing)} (the export extra, on the "
                    "current lane: `LANE=current bash launch/setup.sh`, then run "
                    ".venv-current/bin/python -m launch.export ...).")


def export(request: Request):
  """Converts, proves and writes one file; returns its model-card entry."""
  request.check()
  _check_installed(request.format)
  storage.check_reachable(request.workdir, "--workdir")
  version_dir = _version_dir(request.workdir, request.version)
  card = serving.read_card(version_dir)
  if card is None:
    raise UserError(f"{version_dir} has no model_card.json: not a kmodels export version.")
  if card.get("trainer") in ("estimator", "keras_estimator"):
    raise UserError(f"{version_dir} wraps a tf.estimator graph (trainer={card['trainer']}), "
                    "which the converters do not read: migrate it to Keras first "
                    "(launch.migrate), or export a Keras run.")
  config = evaluation.load_config(Workdir(request.workdir))  # read once: every step needs it
  probabilities = _probabilities_function(config, version_dir, card)
  with tempfile.TemporaryDirectory(prefix="kmodels-export-") as scratch:
    path = os.path.join(scratch, request.file_name)
    calibration = (_calibration_images(request, config) if request.quantize == "int8" else None)
    converted = probabilities
    if request.qat_steps:  # the file is the fine-tuned copy; the proof's reference is not
      quantization_aware.check_installed()
      converted = probabilities_function(
          quantization_aware.fine_tune(probabilities.model, config, request.qat_steps),
          probabilities.input_signature[0].shape[1:], probabilities.logits)
    _write(path, convert(converted, request.format, request.quantize, calibration))
    entry = _prove(request, config, card, version_dir, path, scratch, probabilities)
    target = storage.join(version_dir, request.file_name)
    with open(path, "rb") as f:
      storage.write_atomic(target, f.read())
  _add_to_card(version_dir, card, entry)
  return dict(entry, path=target)


def _version_dir(workdir, version):
  run = Workdir(workdir)
  if version is None:
    found = run.current_export()
    if not found:
      raise UserError(f"{workdir} has no export: train it to the end first (its launch.train "
                      "command writes export/<N>/).")
    return found
  path = storage.join(run.export, str(version))
  if not storage.exists(storage.join(path, "saved_model.pb")):
    raise UserError(f"--version={version}: {path} holds no SavedModel.")
  return path


def _probabilities_function(config, version_dir, card):
  """uint8 images -> float32 probabilities of the run's model, rebuilt in float32 with the
  export's weights (a mixed-precision SavedModel computes in bf16/fp16, which the
  converters do not take); the class names stay in the card."""
  try:
    exported = tf.keras.models.load_model(version_dir, compile=False)
  except (KeyError, OSError, ValueError, tf.errors.OpError) as e:
    raise UserError(f"The export {version_dir} cannot be loaded as a Keras model "
                    f"({type(e).__name__}: {first_line(e)}): it is damaged; export the run "
                    "again.") from e
  image_shape = tuple(card["input"]["shape"][1:])
  with precision.policy("float32"):
    model = models.build_from_config(_without_backbone_file(config.model), image_shape,
                                     len(card["label_names"]))
  models.copy_weights(exported, model)
  return probabilities_function(model, image_shape, models.REGISTRY[config.model.name].logits)


def probabilities_function(model, image_shape, logits):
  """A tf.function: uint8 images [N, *image_shape] -> {"probabilities": float32}, the
  model's preprocessing (pixels / 255) inside."""

  @tf.function(input_signature=[tf.TensorSpec([None, *image_shape], tf.uint8, name="images")])
  def probabilities(images):
    scores = model(data.scale_pixels(tf.cast(images, tf.float32)), training=False)
    return {"probabilities": tf.nn.softmax(scores) if logits else scores}

  probabilities.model = model  # keeps its variables alive
  probabilities.logits = logits
  return probabilities


def convert(probabilities, fmt, quantize="none", calibration=None):
  """The file's bytes: LiteRT (quantized as asked; int8 calibrated on `calibration`,
  uint8 images) or ONNX."""
  if fmt == "onnx":
    return _to_onnx(probabilities)
  return _to_litert(probabilities, quantize, calibration)


def _without_backbone_file(model_config):
  """config.model without `weights`: the export has the trained weights already."""
  unlocked = model_config.copy_and_resolve_references()
  with unlocked.unlocked():
    unlocked.weights = None
  return unlocked


def _calibration_images(request, config):
  """Raw uint8 training images for int8's ranges, with a black and a white one so the
  input range is exactly 0-255 (scale 1, zero point 0: raw pixels go in as they are).

  Drawn through the run's own training pipeline, which shuffles the whole split: the
  first images in split order are one class in a folder sorted by class (64 of them
  calibrated a fastcnn to 49 % where its float32 model scored 90 %).
  """
  split = request.calibration_split or config.dataset.train_split
  # An empty or unknown split is refused by name, as evaluation would refuse it.
  predicting.split_images(request.workdir, split, limit=1, flag="--calibration_split")
  dataset_config = config.dataset.copy_and_resolve_references()
  with dataset_config.unlocked():
    dataset_config.train_split = split
  batches = data.load(dataset_config, 1, config.train.seed).make_train(None)
  pixels = np.concatenate([
      np.clip(np.round(images.numpy() * 255), 0, 255).astype(np.uint8)
      for images, _ in batches.take(request.calibration_images)
  ])
  extremes = np.stack([np.zeros_like(pixels[0]), np.full_like(pixels[0], 255)])
  return np.concatenate([extremes, pixels])


def _to_litert(probabilities, quantize, calibration):
  if quantize != "int8":
    converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen(probabilities)])
    if quantize in ("dynamic", "float16"):
      converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
      converter.target_spec.supported_types = [tf.float16]
    return _convert(converter)
  # Full integer: quantize from float pixels, so the converter sets the uint8 input's
  # scale from the calibration range (0-255 -> scale 1, zero point 0).
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [_frozen(_float_input(probabilities))])
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = lambda: ([image[np.newaxis].astype(np.float32)]
                                              for image in calibration)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  converter.inference_input_type = tf.uint8
  converter.inference_output_type = tf.float32
  return _convert(converter)


def _frozen(function):
  """The tf.function's graph with its variables folded in as constants. Both converters
  take it directly; given the live model instead, TFLiteConverter saves it as a
  SavedModel first (MobileNetV2: 21 s instead of 0.6 s), and tf2onnx's from_function
  would make every captured tensor that is not a variable an ONNX input
  (EfficientNetV2's normalization constants were)."""
  return convert_to_constants.convert_variables_to_constants_v2(function.get_concrete_function())


def _float_input(probabilities):
  spec = probabilities.input_signature[0]

  @tf.function(input_signature=[tf.TensorSpec(spec.shape, tf.float32, name="images")])
  def floats(pixels_0_255):
    return probabilities(tf.cast(tf.round(pixels_0_255), tf.uint8))

  return floats


def _convert(converter):
  try:
    return converter.convert()
  except Exception as e:  # pylint: disable=broad-except  (the converter's many errors)
    lacking = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op",
                                    str(e))))
    if lacking:
      raise UserError(_lacks("that LiteRT's builtin op set lacks", lacking)) from e
    raise UserError(f"The LiteRT converter cannot convert this model: {type(e).__name__}: "
                    f"{first_line(e)}") from e


def _to_onnx(probabilities):
  import onnx  # pylint: disable=g-import-not-at-top  (the export extra: checked first)
  import tf2onnx  # pylint: disable=g-import-not-at-top
  frozen = _frozen(probabilities)
  try:
    with _quiet_onnx_optimizer():
      proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(),
                                                input_names=[t.name for t in frozen.inputs],
                                                output_names=[t.name for t in frozen.outputs],
                                                opset=ONNX_OPSET)
  except Exception as e:  # pylint: disable=broad-except
    raise UserError(f"tf2onnx cannot convert this model: {type(e).__name__}: "
                    f"{first_line(e)}") from e
  # tf2onnx logs an op it has no mapping for and leaves it in the graph under its
  # TensorFlow name, where no ONNX runtime can run it.
  lacking = sorted({
      node.op_type
      for node in proto.graph.node
      if not node.domain and not onnx.defs.has(node.op_type)
  })
  if lacking:
    raise UserError(_lacks(f"that tf2onnx cannot map to ONNX opset {ONNX_OPSET}", lacking))
  return proto.SerializeToString()


@contextlib.contextmanager
def _quiet_onnx_optimizer():
  """tf2onnx logs a traceback when one of its graph optimizers gives up on a pattern
  (MobileNetV3's hard-swish: "Failed to apply optimize_transpose") and carries on with the
  graph unoptimized there; the proof checks the result, so the traceback only alarms."""
  logger = pylogging.getLogger("tf2onnx.optimizer")
  level = logger.level
  logger.setLevel(pylogging.ERROR)
  try:
    yield
  finally:
    logger.setLevel(level)


def _lacks(target, ops):
  return (f"The model uses TensorFlow ops {target}: {', '.join(ops)}. Nothing was "
          "written; replace them in the model (a registry model converts) or serve its "
          "SavedModel.")


def _write(path, content):
  with open(path, "wb") as f:
    f.write(content)


def run_in_runtime(model_path, images, scratch):
  """float32 probabilities of `model_path` (.tflite or .onnx) for uint8 `images`, computed
  by its own runtime in a child process that imports neither TensorFlow nor kmodels."""
  images_path = os.path.join(scratch, "images.npy")
  out_path = os.path.join(scratch, "probabilities.npy")
  np.save(images_path, images)
  proc = subprocess.run(
      [sys.executable, "-I", runtimes.__file__, model_path, images_path, out_path],
      cwd=scratch,
      capture_output=True,
      text=True,
      timeout=1800,
      check=False)
  if proc.returncode:
    raise UserError(f"The runtime could not run {os.path.basename(model_path)}: "
                    f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  if report["tensorflow_imported"] or report["kmodels_imported"]:
    raise AssertionError(f"the runtime's process imported more than the runtime: {report}")
  return np.load(out_path)


def _check_rebuild(saved, converted, version_dir):
  """The proof's reference is the float32 rebuild, so it must compute what the SavedModel
  does: within bf16's rounding, far from what wrongly paired weights give."""
  mean = float(np.mean(np.abs(saved - converted)))
  if mean > REBUILD_MEAN_DIFFERENCE:
    raise UserError(f"The float32 rebuild of {version_dir} does not compute what its "
                    f"SavedModel does (mean probability difference {mean:.3g} > "
                    f"{REBUILD_MEAN_DIFFERENCE}): its weights could not be matched to the "
                    "registry model. Nothing was written; please report this with the "
                    "run's config.json.")


def _in_float32(probabilities, pixels, every_seconds):
  countdown = progress.Countdown("The model in float32", len(pixels), "images", every_seconds)
  outputs = []
  for start in range(0, len(pixels), predicting.BATCH):
    batch = tf.constant(pixels[start:start + predicting.BATCH])
    outputs.append(probabilities(batch)["probabilities"].numpy())
    countdown.update(start + len(batch))
  return np.concatenate(outputs)


def _prove(request, config, card, version_dir, path, scratch, probabilities):
  """Accuracy and probabilities against the export's model computed in float32 by
  TensorFlow (a mixed-precision SavedModel's own probabilities differ by ~1e-3)."""
  split = request.split or config.dataset.eval_split
  _, pixels, labels = predicting.split_images(request.workdir, split)
  logging.info(
      "Proving %s on %s (%d images): the SavedModel, the model in float32, then "
      "the file's own runtime.", request.file_name, split, len(labels))
  saved = predicting.Predictor(version_dir).probabilities(pixels)
  converted = _in_float32(probabilities, pixels, config.train.log_every_seconds)
  _check_rebuild(saved, converted, version_dir)
  actual = run_in_runtime(path, pixels, scratch)
  # The reference is the SavedModel's weights computed in float32 by TensorFlow: the same
  # as the SavedModel for a float32 run; a mixed-precision SavedModel rounds activations to
  # bf16/fp16 and decides some images the other way (3 of 1,000 on a weak model), which
  # is its rounding, not the file's fault. Its own accuracy is listed beside.
  saved_correct = int(np.sum(saved.argmax(-1) == labels))
  reference_correct = int(np.sum(converted.argmax(-1) == labels))
  correct = int(np.sum(actual.argmax(-1) == labels))
  saved_accuracy, reference_accuracy, accuracy = (saved_correct / len(labels),
                                                  reference_correct / len(labels),
                                                  correct / len(labels))
  difference = float(np.max(np.abs(actual - converted)))
  quantized = request.quantize != "none"
  points = QUANTIZED_ACCURACY_POINTS if quantized else FLOAT_ACCURACY_POINTS
  drop = 100 * (reference_accuracy - accuracy)
  allowed = allowed_drop_images(points, len(labels))
  passed = (reference_correct - correct <= allowed and
            (quantized or difference <= FLOAT_PROBABILITY))
  entry = {
      "file": request.file_name,
      "format": request.format,
      "quantization": request.quantize,
      "runtime": "onnxruntime" if request.format == "onnx" else "ai-edge-litert",
      "opset": ONNX_OPSET if request.format == "onnx" else None,
      "input": {
          "dtype": "uint8",
          "shape": card["input"]["shape"],
          "meaning": "raw pixels 0-255, preprocessing inside"
      },
      "output": {
          "name": "probabilities",
          "dtype": "float32",
          "shape": [None, len(card["label_names"])]
      },
      "bytes": os.path.getsize(path),
      "split": split,
      "examples": len(labels),
      "accuracy": accuracy,
      "float32_accuracy": reference_accuracy,
      "savedmodel_accuracy": saved_accuracy,
      "max_probability_difference": difference,
      "max_probability_difference_to_savedmodel": float(np.max(np.abs(actual - saved))),
      "bar": {
          "accuracy_points": points,
          "images": allowed,
          "probability": None if quantized else FLOAT_PROBABILITY
      },
      "quantization_aware_steps": request.qat_steps or None,
      "within_bar": passed
  }
  logging.info(
      "%s: accuracy %.2f %% vs the model's %.2f %% in float32 (the SavedModel's "
      "%.2f %%) on %s (%d images), max probability difference %.2g.",
      request.file_name, 100 * accuracy, 100 * reference_accuracy, 100 * saved_accuracy, split,
      len(labels), difference)
  if not passed and not request.allow_drop:
    raise UserError(
        f"{request.file_name} is refused: accuracy {100 * accuracy:.2f} % vs the model's "
        f"{100 * reference_accuracy:.2f} % in float32 on {split} ({drop:+.2f} points, "
        f"{reference_correct - correct} of {len(labels)} images; bar {points} points, "
        f"{allowed} images), max "
        f"probability difference {difference:.2g}"
        f"{'' if quantized else f' (bar {FLOAT_PROBABILITY:g})'}. Nothing was written; "
        f"--allow_drop writes it anyway.{_qat_offer(request, probabilities.model)}")
  return entry


def _qat_offer(request, model):
  """Where post-training int8 missed: the flag that fine-tunes for int8 instead, if the
  model is one quantization-aware training takes."""
  if (request.quantize != "int8" or request.qat_steps or models.is_subclassed(model) or
      models.batchnorm_layers(model)):
    return ""
  return (f" Quantization-aware fine-tuning learns int8's rounding instead: add "
          f"--qat_steps={QAT_STEPS} (a copy is fine-tuned; the run is not touched).")


def allowed_drop_images(points, examples):
  """How many fewer correct images than the model in float32 a file may have: `points` of
  the split in whole images (no float rounding at the edge), and at least one: a split too
  small to resolve the bar (0.2 points of 400 images) cannot refuse a file for one image."""
  return max(1, int(points * examples / 100 + 1e-9))


def _add_to_card(version_dir, card, entry):
  entries = [e for e in card.get(CARD_KEY, []) if e["file"] != entry["file"]]
  card[CARD_KEY] = sorted(entries + [entry], key=lambda e: e["file"])
  reporting.write_json(storage.join(version_dir, serving.MODEL_CARD), card)


def measure(workdir, version=None, repeats=200):
  """Size, one image's median CPU latency and accuracy of the SavedModel and of each file
  listed in its card; returns the rows and writes them as off_tensorflow.md beside them."""
  storage.check_reachable(workdir, "--workdir")
  version_dir = _version_dir(workdir, version)
  card = serving.read_card(version_dir)
  image = predicting.split_images(workdir,
                                  evaluation.load_config(Workdir(workdir)).dataset.eval_split,
                                  limit=1)[1][0]
  rows = [{
      "model": "SavedModel (serving_default)",
      "bytes": _tree_bytes(version_dir),
      "latency_ms": _savedmodel_latency_ms(version_dir, image, repeats),
      "accuracy": card.get("test_accuracy")
  }]
  with tempfile.TemporaryDirectory(prefix="kmodels-latency-") as scratch:
    image_path = os.path.join(scratch, "image.npy")
    np.save(image_path, image)
    for entry in card.get(CARD_KEY, []):
      with storage.local_copy(storage.join(version_dir, entry["file"])) as local:
        proc = subprocess.run(
            [sys.executable, "-I", runtimes.__file__, "--latency", local, image_path],
            capture_output=True,
            text=True,
            timeout=1800,
            check=False)
      if proc.returncode:
        raise UserError(f"{entry['file']}: its runtime failed: "
                        f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
      rows.append({
          "model": f"{entry['file']} ({entry['runtime']})",
          "bytes": entry["bytes"],
          "latency_ms": json.loads(proc.stdout.strip().splitlines()[-1])["latency_ms"],
          "accuracy": entry["accuracy"]
      })
  flags = " ".join(sorted(precision.cpu_flags() & {"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
  table = "\n".join([
      f"CPU flags: {flags or 'none of avx2/avx512'}; one image, median of {repeats} calls, "
      f"after 10 warm-up calls; accuracy on {card.get('dataset')}'s test split.", "",
      "| model | MB | ms per image | accuracy |", "|---|---|---|---|"
  ] + [
      f"| {r['model']} | {r['bytes'] / 1e6:.2f} | {r['latency_ms']:.3f} | "
      f"{_percent(r['accuracy'])} |" for r in rows
  ])
  storage.write_atomic(storage.join(version_dir, "off_tensorflow.md"), table + "\n")
  return rows, table


def _percent(fraction):
  return "—" if fraction is None else f"{100 * fraction:.2f} %"


def _tree_bytes(path):
  return sum(
      tf.io.gfile.stat(storage.join(directory, name)).length
      for directory, _, files in tf.io.gfile.walk(path)
      for name in files)


def _savedmodel_latency_ms(version_dir, image, repeats):
  serve = serving.load_export(version_dir).signatures["serving_default"]
  batch = tf.constant(image[np.newaxis])
  for _ in range(10):
    serve(images=batch)
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    serve(images=batch)["probabilities"].numpy()
    times.append(time.perf_counter() - start)
  return 1000 * float(np.median(times))
