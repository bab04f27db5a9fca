"""Standard ImageNet architectures from tf.keras.applications, as registry builders.

Each builder takes what every kmodels model takes (images scaled to [0, 1], any channel
count, `num_classes`) and returns a model whose own first layers do what the architecture
expects of its input, so the serving export (uint8 in, pixels / 255 inside) stays right:

  caffe   ResNet50: 0-255 RGB -> BGR minus the ImageNet channel means
  tf      ResNet50V2, MobileNetV2: [-1, 1]
  keras   MobileNetV3, EfficientNetV2, ConvNeXt: 0-255 into the model's own
          preprocessing layers (include_preprocessing=True)

Grey images are repeated into three channels first, so a backbone keeps the shapes its
published weights have. The backbone is built without weights (no download at run time)
and without its 1000-class top; kmodels puts global average pooling and a new
`num_classes` softmax (in float32) on it, after MobileNetV3's 1280-wide hard-swish layer as
Keras' own top has it, so each model has Keras' parameter count. Sizes below an
architecture's minimum are refused up front by `check_size`.
"""

import os
import tempfile
import typing

from absl import logging
import tensorflow as tf

from kmodels import storage
from kmodels.errors import UserError, first_line

layers = tf.keras.layers

# tf.keras.applications reads ImageNet's channel means in BGR order, on 0-255 pixels.
_CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)


class Architecture(typing.NamedTuple):
  keras_name: str  # the constructor in tf.keras.applications
  input_mode: str  # caffe | tf | keras (see the module docstring)
  min_size: int  # the smallest height/width Keras builds it at
  description: str
  # Width of a hard-swish layer between pooling and the classifier, where Keras' own top
  # has one (MobileNetV3's 1x1 "Conv_2"); None: pooling feeds the classifier directly.
  head_units: typing.Optional[int] = None


ARCHITECTURES = {
    "resnet50":
        Architecture("ResNet50", "caffe", 32, "ResNet-50 v1 (Keras Applications)"),
    "resnet50v2":
        Architecture("ResNet50V2", "tf", 32, "ResNet-50 v2, pre-activation"),
    "mobilenet_v2":
        Architecture("MobileNetV2", "tf", 32, "MobileNetV2, width 1.0"),
    "mobilenet_v3_large":
        Architecture("MobileNetV3Large",
                     "keras",
                     32,
                     "MobileNetV3-Large, width 1.0",
                     head_units=1280),
    "efficientnet_v2_b0":
        Architecture("EfficientNetV2B0", "keras", 32, "EfficientNetV2-B0"),
    "convnext_tiny":
        Architecture("ConvNeXtTiny", "keras", 32, "ConvNeXt-Tiny"),
}


def check_size(name, input_shape):
  """A UserError when `input_shape` is smaller than architecture `name` builds at."""
  minimum = ARCHITECTURES[name].min_size
  height, width = input_shape[:2]
  if height < minimum or width < minimum:
    raise UserError(f"model {name!r} needs images of at least {minimum}x{minimum}; got "
                    f"{height}x{width}. Set --config.dataset.image_size={max(minimum, 224)} "
                    "(its ImageNet size is 224), or use a CIFAR-sized model (fastcnn, "
                    "minivggnet).")


def to_backbone_input(images, mode):
  """[0, 1] images with 3 channels -> what the architecture's first layer expects."""
  if mode == "tf":
    return layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")(images)
  pixels = layers.Rescaling(255.0, name="to_0_255")(images)
  if mode == "keras":
    return pixels
  bgr = tf.reverse(pixels, axis=[-1])  # RGB -> BGR; a TF op layer, saved by the op's name
  return layers.Normalization(mean=_CAFFE_BGR_MEANS,
                              variance=(1.0, 1.0, 1.0),
                              name="minus_imagenet_mean")(bgr)


def backbone(name, input_shape):
  """The architecture without its top, for 3-channel images of `input_shape[:2]`."""
  arch = ARCHITECTURES[name]
  constructor = getattr(tf.keras.applications, arch.keras_name)
  kwargs = dict(include_top=False, weights=None, input_shape=(*input_shape[:2], 3))
  if arch.input_mode == "keras":
    kwargs["include_preprocessing"] = True
  return constructor(**kwargs)


def _hard_swish(x):
  """x * relu6(x + 3) / 6, MobileNetV3's activation, as Keras Applications writes it."""
  return layers.Multiply(name="head_hard_swish")(
      [x, layers.ReLU(6.0, name="head_relu6")(x + 3.0) * (1.0 / 6.0)])


def build(name, input_shape, num_classes, dropout=0.0):
  """Registry builder: backbone `name` + global average pooling + a softmax head."""
  check_size(name, input_shape)
  inputs = tf.keras.Input(shape=input_shape, name="image")
  images = inputs
  if input_shape[-1] == 1:
    images = layers.Concatenate(name="grey_to_rgb")([inputs] * 3)
  backbone_input = to_backbone_input(images, ARCHITECTURES[name].input_mode)
  features = backbone(name, input_shape)(backbone_input)
  pooled = layers.GlobalAveragePooling2D(name="avg_pool")(features)
  if ARCHITECTURES[name].head_units:
    pooled = _hard_swish(layers.Dense(ARCHITECTURES[name].head_units, name="head_dense")(pooled))
  if dropout:
    pooled = layers.Dropout(dropout, name="head_dropout")(pooled)
  logits = layers.Dense(num_classes, name="predictions")(pooled)
  outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
  return tf.keras.Model(inputs, outputs, name=name)


# Where Keras Applications publishes its backbone files (for the message; never fetched).
_KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"


def backbone_of(model):
  """The backbone (a nested Keras model) of a model `build` made."""
  return next(layer for layer in model.layers if isinstance(layer, tf.keras.Model))


def _local_copy(path):
  """A local path holding `path`'s bytes (h5py reads local files only)."""
  if not path.startswith("gs://"):
    return path, None
  handle, local = tempfile.mkstemp(suffix=".h5")
  os.close(handle)
  tf.io.gfile.copy(path, local, overwrite=True)
  return local, local


def _what_the_file_holds(local_path):
  """'N layers, first X, last Y' of a Keras weights .h5, or what stops reading it."""
  import h5py  # pylint: disable=g-import-not-at-top  (a TensorFlow dependency)
  try:
    with h5py.File(local_path, "r") as f:
      group = f["model_weights"] if "model_weights" in f else f
      names = [
          n.decode() if isinstance(n, bytes) else n for n in group.attrs.get("layer_names", [])
      ]
  except (OSError, KeyError, ValueError) as e:
    return f"not a Keras weights file ({type(e).__name__}: {first_line(e, 120)})"
  with_weights = [n for n in names if n]
  if not with_weights:
    return "no layers"
  return f"{len(with_weights)} layers, from {with_weights[0]!r} to {with_weights[-1]!r}"


def imagenet_weights_help(name):
  return (f"model.weights takes a file: Keras Applications' {ARCHITECTURES[name].keras_name} "
          f"backbone without its top (a *_notop.h5 from {_KERAS_WEIGHTS_URL}...), "
          "downloaded where there is internet and passed as --config.model.weights=PATH "
          "(local or gs://). kmodels never downloads weights during a run.")


def load_backbone_weights(model, name, path):
  """Loads a Keras Applications "notop" .h5 into `model`'s backbone, or a UserError
  saying what the file holds and what `name` expects."""
  if path == "imagenet":
    raise UserError(imagenet_weights_help(name))
  storage.check_reachable(path, "model.weights")  # a bucket that doesn't answer: one line
  if not tf.io.gfile.exists(path):
    raise UserError(f"model.weights={path} does not exist. " + imagenet_weights_help(name))
  local, temporary = _local_copy(path)
  backbone = backbone_of(model)
  try:
    backbone.load_weights(local)
  except (ValueError, OSError, KeyError) as e:
    expected = sum(1 for layer in backbone.layers if layer.weights)
    raise UserError(
        f"model.weights={path} does not fit {name!r} at input "
        f"{tuple(backbone.input_shape[1:])}: the file holds "
        f"{_what_the_file_holds(local)}; {ARCHITECTURES[name].keras_name} without its top "
        f"has {expected} layers with weights ({type(e).__name__}: "
        f"{first_line(e)}). " + imagenet_weights_help(name)) from e
  finally:
    if temporary:
      os.remove(temporary)
  logging.info("Loaded %s's backbone weights from %s (%d weight arrays; a new %d-class head).",
               name, path, len(backbone.weights), model.output_shape[-1])
