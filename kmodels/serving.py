"""The export a client can use without knowing how the model was trained.

`WORKDIR/export/` is the trained Keras model saved as a SavedModel (Keras can still load
it) with three serving signatures, each applying evaluation's preprocessing inside and
returning named outputs whatever the training precision, trainer or strategy:

  serving_default  images: uint8 [N, H, W, C], as a PNG/JPEG decoder gives them
  serving_float    images: float32 [N, H, W, C], pixels in 0-255
  serving_bytes    images: string [N], encoded PNG/JPEG/GIF/BMP (TF Serving's {"b64": ...}),
                   decoded, converted to C channels and brought to H x W inside: by
                   evaluation's own centre crop and resize for runs with dataset.image_size
                   (a served file gets the pixels evaluation gave it), else resized whole
  ->  probabilities: float32 [N, classes]; class_id: int64 [N]; class_name: string [N]

Beside it, `export/model_card.json` says what the model is (dataset, labels, input,
preprocessing, precision, accuracy, config): `python -m launch.predict --describe` prints it.
"""

import json
import typing

import tensorflow as tf

import kmodels
from kmodels import data, images, reporting, storage
from kmodels.errors import UserError, first_line

SIGNATURES = ("serving_default", "serving_float", "serving_bytes")
MODEL_CARD = "model_card.json"
INPUT_NAME = "images"


def _outputs(model, images_0_255, label_names, logits):
  """Named outputs for a batch of pixels in 0-255 (any dtype)."""
  scores = tf.cast(model(data.scale_pixels(images_0_255), training=False), tf.float32)
  probabilities = tf.nn.softmax(scores) if logits else scores
  class_id = tf.argmax(probabilities, axis=-1)
  return {"probabilities": probabilities, "class_id": class_id,
          "class_name": tf.gather(tf.constant(label_names), class_id)}


def _decode(encoded, image_shape):
  height, width, channels = image_shape
  image = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
  image = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _bytes_to_pixels(image_shape, eval_crop_fraction):
  """encoded image -> uint8 image_shape, as evaluation prepares images of this run."""
  if eval_crop_fraction is None:
    return lambda encoded: _decode(encoded, image_shape)
  return lambda encoded: images.eval_image(encoded, image_shape[0], eval_crop_fraction,
                                           image_shape[-1])


def signatures(model, image_shape, label_names, logits, eval_crop_fraction=None):
  """The serving functions of `model`, by signature name."""
  shape = [None, *image_shape]
  to_pixels = _bytes_to_pixels(image_shape, eval_crop_fraction)

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8, name=INPUT_NAME)])
  def serving_default(images):
    return _outputs(model, images, label_names, logits)

  @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name=INPUT_NAME)])
  def serving_float(images):
    return _outputs(model, images, label_names, logits)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
  def serving_bytes(images):
    decoded = tf.map_fn(to_pixels, images,
                        fn_output_signature=tf.TensorSpec(image_shape, tf.uint8))
    return _outputs(model, decoded, label_names, logits)

  return {"serving_default": serving_default, "serving_float": serving_float,
          "serving_bytes": serving_bytes}


def model_label(config):
  """The trained model's name for people: the registry name, or the DNNClassifier's shape."""
  if config.trainer == "estimator":
    return f"DNNClassifier{list(config.estimator.hidden_units)}"
  return config.model.name


class Card(typing.NamedTuple):
  """What the model card records beyond the dataset info."""
  precision: str
  trainer: str
  model_name: str
  test_accuracy: typing.Optional[float]
  config: dict

  @classmethod
  def from_config(cls, config, test_accuracy):
    return cls(precision=config.precision, trainer=config.trainer,
               model_name=model_label(config), test_accuracy=test_accuracy,
               config=json.loads(config.to_json_best_effort()))


def model_card(info, card: Card):
  return {
      "kmodels_version": kmodels.__version__,
      "tensorflow_version": tf.__version__,
      "dataset": info.name,
      "label_names": list(info.label_names),
      "input": {"signature": "serving_default", "name": INPUT_NAME, "dtype": "uint8",
                "shape": [None, *info.image_shape]},
      "signatures": {"serving_default": "uint8 images [N, H, W, C]",
                     "serving_float": "float32 pixels in 0-255 [N, H, W, C]",
                     "serving_bytes": "encoded PNG/JPEG strings [N], resized inside"},
      "outputs": {"probabilities": "float32 [N, classes]", "class_id": "int64 [N]",
                  "class_name": "string [N]"},
      "preprocessing": "pixels / 255 as float32 (inside the signatures)",
      "bytes_preprocessing": (
          "decoded, resized to the input size" if info.eval_crop_fraction is None else
          f"decoded, centre square of {info.eval_crop_fraction} x the shorter side, resized "
          "to the input size (as evaluation)"),
      "model": card.model_name,
      "trainer": card.trainer,
      "training_precision": card.precision,
      "test_accuracy": card.test_accuracy,
      "config": card.config,
  }


def export_keras(model, info, export_dir, card: Card, logits: bool):
  """Saves `model` with the serving signatures, and the model card beside it."""
  model.save(export_dir, save_format="tf", include_optimizer=False,
             signatures=signatures(model, info.image_shape, info.label_names, logits,
                                   info.eval_crop_fraction),
             save_traces=not _only_keras_layers(model))
  write_card(export_dir, info, card)


def _only_keras_layers(model):
  """Whether `model` is made of Keras' own layer classes alone.

  Such a model reloads with tf.keras.models.load_model from its config, so the export can
  skip tracing every layer's call (for EfficientNetV2-B0's ~270 layers that tracing took
  90 of the export's 100 s). Models with kmodels' own layer classes keep the traces, which
  is what lets load_model rebuild them without their Python classes.
  """
  return all(type(layer).__module__.startswith(("keras.", "tf_keras."))
             for layer in model._flatten_layers(include_self=True))  # pylint: disable=protected-access


def write_card(export_dir, info, card: Card):
  reporting.write_json(storage.join(export_dir, MODEL_CARD), model_card(info, card))


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
                    f"incomplete ({type(e).__name__}: {first_line(e)}). Export it again: re-run the "
                    "run's launch.train command (its checkpoints are kept), or copy the "
                    "export/ directory again.") from e
