"""The model registry: one explicit dict from name to builder.

Every builder has the signature `build(input_shape, num_classes, **kwargs)` and returns
an uncompiled `tf.keras.Model`. The launcher picks one by `config.model.name`; the other
keys of `config.model` are passed as keyword arguments.
"""

import collections
import functools
import re

import tensorflow as tf

from kmodels import memory
from kmodels.errors import UserError
from kmodels.models import applications, functional, sequential, subclassed

ModelEntry = collections.namedtuple(
    "ModelEntry", ["build", "style", "description", "logits", "min_size"],
    defaults=[False, 1])  # min_size: the smallest image side the model builds at


def _subclassed(cls):
  return functools.partial(subclassed.build, cls)


REGISTRY = {
    # The CIFAR styles tutorial (CIFAR-10), and the same networks in the other two styles.
    "shallownet":
        ModelEntry(sequential.shallownet, "sequential",
                   "1 conv + linear (the CIFAR styles tutorial)"),
    "shallownet_functional":
        ModelEntry(functional.shallownet, "functional", "ShallowNet twin"),
    "shallownet_subclass":
        ModelEntry(_subclassed(subclassed.ShallowNet), "subclassed", "ShallowNet twin"),
    "minigooglenet":
        ModelEntry(functional.minigooglenet, "functional",
                   "Inception-style CIFAR net (the CIFAR styles tutorial)"),
    "minigooglenet_subclass":
        ModelEntry(_subclassed(subclassed.MiniGoogLeNet), "subclassed",
                   "MiniGoogLeNet from Inception/Downsample Layers"),
    "minivggnet":
        ModelEntry(_subclassed(subclassed.MiniVGGNet), "subclassed",
                   "two VGG stages + dense head (the CIFAR styles tutorial)"),
    "minivggnet_sequential":
        ModelEntry(sequential.minivggnet, "sequential", "MiniVGGNet twin"),
    "minivggnet_functional":
        ModelEntry(functional.minivggnet, "functional", "MiniVGGNet twin"),
    # Time to accuracy: configs/fashion_mnist_fast.py.
    "fastcnn":
        ModelEntry(functional.fastcnn, "functional",
                   "2 x (conv/BN/pool) + dense, for time to accuracy"),
    # The CIFAR training-loop tutorial (CIFAR-10).
    "cifar_cnn_sequential":
        ModelEntry(sequential.cifar_cnn, "sequential",
                   "3 x conv/pool + dense (the CIFAR training-loop tutorial)"),
    "cifar_cnn_subclass":
        ModelEntry(_subclassed(subclassed.CifarModel), "subclassed",
                   "CifarModel of ConvolutionLayer/HeadLayer "
                   "(the CIFAR training-loop tutorial)"),
    # The MNIST styles tutorial (MNIST): the same MLP in the three styles.
    "mlp":
        ModelEntry(sequential.mlp, "sequential",
                   "Flatten -> Dense 256 -> softmax (the MNIST styles tutorial)"),
    "mlp_functional":
        ModelEntry(functional.mlp, "functional", "the MLP, named mnist_model"),
    "mlp_subclass":
        ModelEntry(_subclassed(subclassed.MLP), "subclassed", "the MLP"),
    # The MNIST subclassing tutorial (MNIST): logits models, trained with from_logits=True.
    "cnnblocks":
        ModelEntry(sequential.cnnblocks,
                   "sequential",
                   "CNNBlock 32/64/128 (the MNIST subclassing tutorial)",
                   logits=True),
    "resnet_like":
        ModelEntry(_subclassed(subclassed.ResNetLike),
                   "subclassed",
                   "ResBlocks + GAP (the MNIST subclassing tutorial)",
                   logits=True),
}
# Standard ImageNet architectures (tf.keras.applications), at any size they support.
REGISTRY.update({
    name:
        ModelEntry(functools.partial(applications.build, name),
                   "functional",
                   arch.description,
                   min_size=arch.min_size) for name, arch in applications.ARCHITECTURES.items()
})


def model_names():
  """`name (style)` for every registered model, for error messages and docs."""
  return [f"{name} ({entry.style})" for name, entry in sorted(REGISTRY.items())]


def check_name(name):
  """Raises UserError listing every registered model when `name` is not one of them."""
  if name not in REGISTRY:
    raise UserError(f"Unknown model.name {name!r}. Registered models: {', '.join(model_names())}.")


def build_model(name, input_shape, num_classes, **kwargs):
  """Builds the registered model `name` for images of `input_shape` and `num_classes`."""
  check_name(name)
  try:
    return REGISTRY[name].build(tuple(input_shape), num_classes, **kwargs)
  except TypeError as e:
    raise UserError(f"model {name!r} does not accept these model.* settings "
                    f"{sorted(kwargs)}: {e}") from e
  except tf.errors.ResourceExhaustedError as e:  # a weight bigger than the host's memory
    raise memory.model_refused(e, name, kwargs) from e
  except ValueError as e:  # Keras' checks of argument values and of shapes
    detail = _shape_error_detail(e)
    # Only a feature map downsampled past 1x1 is the images' size; a bad width is not.
    too_small = "dimension" in detail.lower()
    raise UserError(
        f"model {name!r} can't be built for images of shape {tuple(input_shape)} "
        f"(model.* settings {kwargs or 'none'}): {detail}" +
        (" Models that downsample less take smaller images: mlp, shallownet, minivggnet, "
         "fastcnn." if too_small else "")) from e


def _shape_error_detail(error):
  """The lines of a Keras build error that say which layer and which dimension failed."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  dimension = [line for line in lines if "dimension" in line.lower()][:1]
  parts = []
  for line in lines[:1] + dimension:
    # TF appends the failing node's whole definition; the words before it say enough.
    part = line.split(" for '{{node")[0].rstrip(".")[:300] + "."
    if part not in parts:
      parts.append(part)
  return " ".join(parts)


# config.model keys that are not builder arguments.
_NOT_BUILDER_ARGS = ("name", "weights", "freeze_backbone_epochs")

backbone_of = applications.backbone_of


def synchronize_batchnorm(model):
  """Makes each BatchNormalization layer of `model` normalize by the global batch's
  statistics (all-reduced across replicas) while training; returns how many there are.

  The same as building them with synchronized=True, for models of every style: the flag
  is read when the training step is traced, and the fused kernel has no cross-replica
  form (Keras 2.15 and tf-keras 2.21 check both in BatchNormalization.__init__).
  """
  norms = [
      layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
      if isinstance(layer, tf.keras.layers.BatchNormalization)
  ]
  for layer in norms:
    layer.synchronized, layer.fused = True, False
  return len(norms)


def batchnorm_layers(model):
  """Every BatchNormalization layer of `model`, nested models included, that trains."""
  return [
      layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
      if isinstance(layer, tf.keras.layers.BatchNormalization) and layer.trainable
  ]


def reestimate_batchnorm(model, batches):
  """Sets every training BatchNorm's moving mean and variance to their average over
  `batches` (image batches, training mode) for the weights as they are ("precise
  BatchNorm"); returns how many batches it saw. Momentum k / (k + 1) on the k-th batch
  makes each average the plain mean over the batches.
  """
  norms = batchnorm_layers(model)
  momenta = [layer.momentum for layer in norms]
  seen = 0
  try:
    for seen, images in enumerate(batches, 1):
      for layer in norms:
        layer.momentum = (seen - 1) / seen
      model(images, training=True)
  finally:
    for layer, momentum in zip(norms, momenta):
      layer.momentum = momentum
  return seen


def build_from_config(model_config, input_shape, num_classes):
  """`config.model` -> a model: `name` picks the registry entry, `weights` a backbone
  file to load (ImageNet architectures), the other keys are the builder's kwargs."""
  kwargs = {k: v for k, v in model_config.items() if k not in _NOT_BUILDER_ARGS}
  weights = model_config.get("weights")
  if weights and model_config.name not in applications.ARCHITECTURES:
    raise UserError(f"model.weights loads the backbone of an ImageNet architecture "
                    f"({', '.join(sorted(applications.ARCHITECTURES))}); model "
                    f"{model_config.name!r} has none. Unset model.weights.")
  model = build_model(model_config.name, input_shape, num_classes, **kwargs)
  if weights:
    applications.load_backbone_weights(model, model_config.name, weights)
  return model


def _are_shares(y_true):
  """Whether y_true holds class shares ([batch, classes]) rather than integer labels
  ([batch], or [batch, 1] as Keras hands them to losses)."""
  return y_true.shape.rank == 2 and y_true.shape[-1] not in (None, 1)


def _targets(y_true, y_pred):
  """Targets as class shares: integer labels one-hot, mixed targets (MixUp, CutMix) as
  they are."""
  y_true = tf.convert_to_tensor(y_true)
  if _are_shares(y_true):
    return tf.cast(y_true, y_pred.dtype)
  labels = tf.cast(tf.reshape(y_true, [-1]), tf.int32)
  return tf.one_hot(labels, tf.shape(y_pred)[-1], dtype=y_pred.dtype)


def _labels(y_true):
  """Integer labels: as they are, or the largest share of mixed targets."""
  y_true = tf.convert_to_tensor(y_true)
  if _are_shares(y_true):
    return tf.argmax(y_true, axis=-1)
  return y_true


class SmoothedSparseCrossentropy(tf.keras.losses.Loss):
  """Cross-entropy against targets smoothed towards uniform, from integer labels or from
  mixed targets (class shares).

  The target is (1 - label_smoothing) x the label's share plus label_smoothing / classes
  on every class, as CategoricalCrossentropy(label_smoothing=...) does for one-hot labels;
  Keras' sparse cross-entropy has no smoothing, so the labels become one-hot here.
  """

  def __init__(self,
               from_logits,
               label_smoothing,
               reduction=tf.keras.losses.Reduction.AUTO,
               name="smoothed_sparse_crossentropy"):
    super().__init__(reduction=reduction, name=name)
    self.from_logits, self.label_smoothing = from_logits, label_smoothing

  def call(self, y_true, y_pred):
    return tf.keras.losses.categorical_crossentropy(_targets(y_true, y_pred),
                                                    y_pred,
                                                    from_logits=self.from_logits,
                                                    label_smoothing=self.label_smoothing)

  def get_config(self):
    return {
        **super().get_config(), "from_logits": self.from_logits,
        "label_smoothing": self.label_smoothing
    }


def loss(name, reduction=tf.keras.losses.Reduction.AUTO, label_smoothing=0.0, mixed_targets=False):
  """Cross-entropy that reads model `name`'s outputs right: logits or probabilities;
  with `label_smoothing` (train.label_smoothing), against smoothed targets; with
  `mixed_targets` (MixUp, CutMix), training targets may be class shares."""
  if label_smoothing or mixed_targets:
    return SmoothedSparseCrossentropy(REGISTRY[name].logits, label_smoothing, reduction)
  return tf.keras.losses.SparseCategoricalCrossentropy(from_logits=REGISTRY[name].logits,
                                                       reduction=reduction)


def _top5(y_true, y_pred):
  return tf.keras.metrics.sparse_top_k_categorical_accuracy(_labels(y_true), y_pred, k=5)


def _top1(y_true, y_pred):
  return tf.keras.metrics.sparse_categorical_accuracy(_labels(y_true), y_pred)


def accuracy_metric(name="accuracy", mixed_targets=False):
  """Top-1 accuracy; with mixed targets, against each image's largest share."""
  if mixed_targets:
    return tf.keras.metrics.MeanMetricWrapper(_top1, name=name)
  return tf.keras.metrics.SparseCategoricalAccuracy(name=name)


# From this many classes on, runs also report top-5 accuracy (ImageNet's second number).
TOP5_MIN_CLASSES = 20


def compile_classifier(model,
                       name,
                       optimizer,
                       num_classes=None,
                       label_smoothing=0.0,
                       mixed_targets=False,
                       **compile_kwargs):
  """Compiles registered model `name` with its loss and the accuracy metric every run logs
  (and top-5 accuracy when `num_classes` is TOP5_MIN_CLASSES or more; a subclassed model
  knows its output size only once called). `mixed_targets`: training targets may be
  class shares (MixUp, CutMix); evaluation's integer labels work either way."""
  metrics = [accuracy_metric(mixed_targets=mixed_targets)]
  if num_classes and num_classes >= TOP5_MIN_CLASSES:
    metrics.append(
        tf.keras.metrics.MeanMetricWrapper(_top5, name="top5_accuracy") if mixed_targets else tf.
        keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
  model.compile(optimizer=optimizer,
                loss=loss(name, label_smoothing=label_smoothing, mixed_targets=mixed_targets),
                metrics=metrics,
                **compile_kwargs)
  return model


def is_subclassed(model):
  """True for a subclassed model: Keras (and tools that rewrite models layer by layer)
  never saw its graph of layers, only its `call`."""
  return not (isinstance(model, tf.keras.Sequential) or model._is_graph_network)  # pylint: disable=protected-access


def summary_model(model, input_shape):
  """A model whose summary shows output shapes, also for subclassed models.

  A subclassed model's own summary says "multiple" for every shape, because Keras never
  saw its graph. Calling `call` on a symbolic Input traces that graph (the MNIST subclassing
  tutorial's trick);
  the wrapper shares the model's layers and weights.
  """
  if not is_subclassed(model):
    return model
  inputs = tf.keras.Input(shape=input_shape, name="image")
  return tf.keras.Model(inputs, model.call(inputs), name=model.name)


def _creation_index(variable):
  # Eager variables get a process-wide counter in their unique id ("Variable_41").
  return int(variable._unique_id.rsplit("_", 1)[-1])  # pylint: disable=protected-access


def _leaf_layers_with_weights(model):
  """Leaf layers in the order their weights were created (= the order of the forward pass).

  Functional models list layers topologically, which puts parallel branches' layers side
  by side; creation order is the same in every style.
  """
  # pylint: disable=protected-access  (Keras has no public walk of nested layers)
  leaves = [
      layer for layer in model._flatten_layers(include_self=False, recursive=True)
      if layer.weights and not list(layer._flatten_layers(include_self=False))
  ]
  # pylint: enable=protected-access
  return sorted(leaves, key=lambda layer: min(_creation_index(w) for w in layer.weights))


def _unnumbered(name):
  """'conv2d_3/kernel:0' -> 'conv2d/kernel': Keras numbers auto-named layers per process."""
  return "/".join(re.sub(r"_\d+$", "", part) for part in name.split(":")[0].split("/"))


def _same_weights_in_order(source, target):
  first, second = source.weights, target.weights
  return len(first) == len(second) and all(
      a.shape == b.shape and _unnumbered(a.name) == _unnumbered(b.name)
      for a, b in zip(first, second))


def copy_weights(source, target):
  """Copies weights between two builds of one architecture, whatever their styles.

  `get_weights()` orders weights differently by style (subclassed models list every
  trainable weight before the non-trainable ones), so this pairs the leaf layers in
  creation order and copies layer by layer, checking shapes.
  """
  if _same_weights_in_order(source, target):
    # Two builds of one config (a loaded SavedModel and its rebuild): the same list. A
    # revived model creates its weights in another order (head first), so creation
    # order cannot pair them (MobileNetV2: "predictions -> Conv1").
    target.set_weights(source.get_weights())
    return len(_leaf_layers_with_weights(target))
  sources, targets = _leaf_layers_with_weights(source), _leaf_layers_with_weights(target)
  if len(sources) != len(targets):  # zip would silently copy only a prefix
    raise ValueError(f"{source.name} has {len(sources)} layers with weights, {target.name} "
                     f"has {len(targets)}: not the same architecture.")
  pairs = list(zip(sources, targets))
  for src, dst in pairs:
    shapes = [w.shape for w in src.weights], [w.shape for w in dst.weights]
    if shapes[0] != shapes[1]:
      raise ValueError(f"{src.name} -> {dst.name}: weight shapes differ {shapes}")
    dst.set_weights(src.get_weights())
  return len(pairs)
