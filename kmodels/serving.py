"""The export a client can use without knowing how the model was trained.

`WORKDIR/export/<version>/` (1, 2, ...: each export of the run adds the next version; TF
Serving and KServe serve the highest) is the trained model saved as a SavedModel with three
serving signatures, each applying evaluation's preprocessing inside and returning named
outputs whatever the training precision, trainer or strategy:

  serving_default  images: uint8 [N, H, W, C], as a PNG/JPEG decoder gives them
  serving_float    images: float32 [N, H, W, C], pixels in 0-255
  serving_bytes    images: string [N], encoded PNG/JPEG/GIF/BMP (TF Serving's {"b64": ...}),
                   decoded, converted to C channels and brought to H x W inside: by
                   evaluation's own centre crop and resize for runs with dataset.image_size
                   (a served file gets the pixels evaluation gave it), else resized whole
  ->  probabilities: float32 [N, classes]; class_id: int64 [N]; class_name: string [N]

Keras trainers' versions are Keras SavedModels (tf.keras.models.load_model reads them);
Estimator trainers' wrap the Estimator's own export in the same signatures. Each version
holds `model_card.json` (what the model is: dataset, labels, input, preprocessing,
precision, accuracy, config; `python -m launch.predict --describe` prints it) and
`assets.extra/tf_serving_warmup_requests`: one real request per signature, built from
evaluation images, which TF Serving replays before it serves the version.
"""

import contextlib
import json
import typing

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

import kmodels
from kmodels import data, distribute, reporting, storage
from kmodels.data import images
from kmodels.errors import UserError, first_line

MODEL_CARD = "model_card.json"
INPUT_NAME = "images"
# Where TF Serving looks for warm-up requests in a SavedModel version (its
# saved_model_warmup docs); TF Serving reads at most 1000 of them.
WARMUP_REQUESTS = ("assets.extra", "tf_serving_warmup_requests")
WARMUP_IMAGES = 4  # per request
INCOMPLETE = "incomplete-"  # a version being written: export/incomplete-<N>/


def keras_scores(model):
  """The scores function of a Keras model: float32 pixels in 0-255 -> its outputs."""
  return lambda pixels_0_255: model(data.scale_pixels(pixels_0_255), training=False)


def _outputs(scores_of, images_0_255, label_names, logits):
  """Named outputs for a batch of pixels in 0-255 (any dtype)."""
  scores = tf.cast(scores_of(tf.cast(images_0_255, tf.float32)), tf.float32)
  probabilities = tf.nn.softmax(scores) if logits else scores
  class_id = tf.argmax(probabilities, axis=-1)
  return {
      "probabilities": probabilities,
      "class_id": class_id,
      "class_name": tf.gather(tf.constant(label_names), class_id)
  }


def decode(encoded, image_shape):
  """encoded image -> uint8 `image_shape`, resized whole (runs without an evaluation crop)."""
  height, width, channels = image_shape
  image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
  image = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def bytes_to_pixels(image_shape, eval_crop_fraction):
  """encoded image -> uint8 image_shape, as evaluation prepares images of this run."""
  if eval_crop_fraction is None:
    return lambda encoded: decode(encoded, image_shape)
  return lambda encoded: images.eval_image(encoded, image_shape[0], eval_crop_fraction, image_shape[
      -1])


def signatures(scores_of, image_shape, label_names, logits, eval_crop_fraction=None):
  """The serving functions, by signature name, of a model whose `scores_of` maps float32
  pixels in 0-255 [N, H, W, C] to its scores (logits when `logits`, else probabilities)."""
  shape = [None, *image_shape]
  to_pixels = bytes_to_pixels(image_shape, eval_crop_fraction)

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8, name=INPUT_NAME)])
  def serving_default(images):
    return _outputs(scores_of, images, label_names, logits)

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)])
  def serving_float(images):
    return _outputs(scores_of, images, label_names, logits)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
  def serving_bytes(images):
    decoded = tf.map_fn(to_pixels, images, fn_output_signature=tf.TensorSpec(image_shape, tf.uint8))
    return _outputs(scores_of, decoded, label_names, logits)

  return {
      "serving_default": serving_default,
      "serving_float": serving_float,
      "serving_bytes": serving_bytes
  }


class Card(typing.NamedTuple):
  """What the model card records beyond the dataset info."""
  precision: str
  trainer: str
  model_name: str
  test_accuracy: typing.Optional[float]
  config: dict

  @classmethod
  def from_config(cls, config, test_accuracy, model_name):
    """model_name: the trained model's name for people (trainers.model_label)."""
    return cls(precision=config.precision,
               trainer=config.trainer,
               model_name=model_name,
               test_accuracy=test_accuracy,
               config=json.loads(config.to_json_best_effort()))


def model_card(info, card: Card):
  return {
      "kmodels_version": kmodels.__version__,
      "tensorflow_version": tf.__version__,
      "dataset": info.name,
      "label_names": list(info.label_names),
      "input": {
          "signature": "serving_default",
          "name": INPUT_NAME,
          "dtype": "uint8",
          "shape": [None, *info.image_shape]
      },
      "signatures": {
          "serving_default": "uint8 images [N, H, W, C]",
          "serving_float": "float32 pixels in 0-255 [N, H, W, C]",
          "serving_bytes": "encoded PNG/JPEG strings [N], resized inside"
      },
      "outputs": {
          "probabilities": "float32 [N, classes]",
          "class_id": "int64 [N]",
          "class_name": "string [N]"
      },
      "preprocessing": "pixels / 255 as float32 (inside the signatures)",
      "bytes_preprocessing":
          ("decoded, resized to the input size" if info.eval_crop_fraction is None else
           f"decoded, centre square of {info.eval_crop_fraction} x the shorter side, resized "
           "to the input size (as evaluation)"),
      "eval_crop_fraction": info.eval_crop_fraction,
      "model": card.model_name,
      "trainer": card.trainer,
      "training_precision": card.precision,
      "test_accuracy": card.test_accuracy,
      "config": card.config,
  }


class Slot(typing.NamedTuple):
  """Where this worker writes the export, and the version it will be (None on Vertex AI)."""
  path: str
  version: typing.Optional[int]


@contextlib.contextmanager
def new_version(export_root, strategy=None, versioned=True):
  """Yields the Slot of the next export; on success it becomes the served version.

  The chief writes into `export/incomplete-<N>/` and renames it to `export/<N>/` when all
  is written: servers only load directories named by a number, so they never see half a
  version (locally the rename is atomic; on object stores it is a server-side copy object
  by object, seconds against the minutes of writing the export). Other workers of a
  multi-worker job write a scratch copy (distribute.writable_path). Unversioned (Vertex
  AI's AIP_MODEL_DIR), the slot is `export_root` itself.
  """
  strategy = strategy or tf.distribute.get_strategy()  # none given: this process writes
  if not versioned:
    with distribute.writable_path(export_root, strategy) as path:
      yield Slot(path, None)
    return
  version = _next_version(export_root)
  final = storage.join(export_root, str(version))
  staging = storage.join(export_root, f"{INCOMPLETE}{version}")
  with distribute.writable_path(staging, strategy) as path:
    if path == staging:
      _remove_incomplete(export_root)  # left by exports that were killed
    storage.makedirs(path)
    yield Slot(path, version)
    if path == staging:
      storage.rename(staging, final)


def _remove_incomplete(export_root):
  if storage.isdir(export_root):
    for name in storage.listdir(export_root):
      if name.startswith(INCOMPLETE):
        storage.remove(storage.join(export_root, name.rstrip("/")))


def _next_version(export_root):
  """1 + the highest version number in use, complete or not (none is ever reused)."""
  if not storage.isdir(export_root):
    return 1
  names = (name.rstrip("/") for name in storage.listdir(export_root))
  numbers = [int(name.rpartition("-")[2]) for name in names if name.rpartition("-")[2].isdigit()]
  return max(numbers, default=0) + 1


def export_keras(model, info, slot: Slot, card: Card, logits: bool, warmup_images):
  """Saves `model` with the serving signatures, its model card and warm-up requests."""
  model.save(slot.path,
             save_format="tf",
             include_optimizer=False,
             signatures=signatures(keras_scores(model), info.image_shape, info.label_names, logits,
                                   info.eval_crop_fraction),
             save_traces=not _only_keras_layers(model))
  write_extras(slot, info, card, warmup_images)


def export_module(module, scores_of, info, slot: Slot, card: Card, logits, warmup_images):
  """Saves a tf.Module (holding what `scores_of` uses) with the serving signatures."""
  tf.saved_model.save(module,
                      slot.path,
                      signatures=signatures(scores_of, info.image_shape, info.label_names, logits,
                                            info.eval_crop_fraction))
  write_extras(slot, info, card, warmup_images)


def _only_keras_layers(model):
  """Whether `model` is made of Keras' own layer classes alone.

  Such a model reloads with tf.keras.models.load_model from its config, so the export can
  skip tracing every layer's call (for EfficientNetV2-B0's ~270 layers that tracing took
  90 of the export's 100 s). Models with kmodels' own layer classes keep the traces, which
  is what lets load_model rebuild them without their Python classes.
  """
  return all(
      type(layer).__module__.startswith(("keras.", "tf_keras."))
      for layer in model._flatten_layers(include_self=True))  # pylint: disable=protected-access


def write_extras(slot: Slot, info, card: Card, warmup_images):
  """The model card, and TF Serving's warm-up requests, into the version being written."""
  reporting.write_json(storage.join(slot.path, MODEL_CARD),
                       dict(model_card(info, card), version=slot.version))
  write_warmup_requests(slot.path, warmup_images)


def warmup_requests(pixels):
  """One PredictionLog per signature, each asking for `pixels` (uint8 [N, H, W, C]) in
  the signature's own input form."""
  encoded = [tf.io.encode_png(image).numpy() for image in pixels]
  inputs = {
      "serving_default": pixels,
      "serving_float": pixels.astype(np.float32),
      "serving_bytes": np.array(encoded, dtype=object)
  }
  return [predict_log(name, {INPUT_NAME: value}) for name, value in inputs.items()]


def write_warmup_requests(version_dir, pixels):
  write_prediction_logs(version_dir, warmup_requests(pixels))


def predict_log(signature_name, inputs):
  """A TF Serving PredictionLog asking `signature_name` for {input name: value}."""
  return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(
      request=predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(
          signature_name=signature_name),
                                         inputs={
                                             name: tf.make_tensor_proto(value)
                                             for name, value in inputs.items()
                                         })))


def write_prediction_logs(version_dir, logs):
  """TF Serving's warm-up file of a SavedModel version: the requests it replays at load."""
  path = storage.join(version_dir, *WARMUP_REQUESTS)
  storage.makedirs(storage.dirname(path))
  with tf.io.TFRecordWriter(path) as writer:
    for log in logs:
      writer.write(log.SerializeToString())


def read_card(export_dir):
  return reporting.read_json(storage.join(export_dir, MODEL_CARD), None)


def load_export(export_dir):
  """tf.saved_model.load(export_dir), or a UserError naming the damage.

  A damaged SavedModel fails in many ways (OSError for a cut saved_model.pb, ValueError for
  an empty one, IndexError or an OpError for damaged variables, FileNotFoundError for
  missing ones; TF 2.15): any failure to load a model the user pointed at is reported as
  that model's damage, with what TensorFlow said.
  """
  try:
    return tf.saved_model.load(export_dir)
  except Exception as e:  # pylint: disable=broad-except  (see the docstring)
    raise UserError(f"The SavedModel in {export_dir} cannot be loaded: it is damaged or "
                    f"incomplete ({type(e).__name__}: {first_line(e)}). Export it again: "
                    "re-run the run's launch.train command (its checkpoints are kept; a new "
                    "version is exported), or copy the version's directory again.") from e
