"""Models written in the Sequential style: a plain stack of layers, one input, one output."""

import tensorflow as tf

from kmodels.models import blocks

layers = tf.keras.layers


def _stack(input_shape, stack, name):
  return tf.keras.Sequential([tf.keras.Input(shape=input_shape, name="image"), *stack], name=name)


def shallownet(input_shape, num_classes):
  """ShallowNet (the CIFAR styles tutorial): 328,586 parameters at 32x32x3 with 10 classes."""
  return _stack(input_shape, blocks.shallownet_layers(num_classes), "shallownet")


def mlp(input_shape, num_classes, hidden_units=256):
  """The MNIST styles tutorial multi-layer perceptron."""
  return _stack(input_shape, blocks.mlp_layers(num_classes, hidden_units), "mlp")


def minivggnet(input_shape, num_classes, **kwargs):
  """MiniVGGNet as a Sequential stack (the subclassed model's twin)."""
  return _stack(input_shape, blocks.minivgg_layers(num_classes, **kwargs), "minivggnet")


def cifar_cnn(input_shape, num_classes):
  """The CIFAR training-loop tutorial CNN: three conv/pool stages and a dense head."""
  return _stack(input_shape, blocks.cifar_cnn_layers(num_classes), "cifar_cnn")


def cnnblocks(input_shape, num_classes):
  """CNNBlock 32 -> 64 -> 128 -> Flatten -> Dense(classes) logits (no softmax).

  The MNIST subclassing tutorial's first model.
  """
  return _stack(
      input_shape,
      [
          blocks.CNNBlock(32),
          blocks.CNNBlock(64),
          blocks.CNNBlock(128),
          layers.Flatten(),
          # float32 logits: the loss reads them at full precision.
          layers.Dense(num_classes, dtype="float32", name="logits")
      ],
      "cnnblocks")
