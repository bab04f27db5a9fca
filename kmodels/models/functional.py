"""Models written in the Functional style: a graph of layers from Input to outputs."""

import tensorflow as tf

from kmodels.models import blocks

layers = tf.keras.layers


def minigooglenet(input_shape, num_classes, dropout=0.5):
  """MiniGoogLeNet (the CIFAR styles tutorial), 1,656,250 parameters at 32x32x3 with 10 classes.

  The seed ends in a 7x7 average pool, which at 32x32 inputs covers the whole final
  feature map. The pool here always covers the whole final map, so it is exactly the
  seed's pool at 32x32 and still works at 28x28 (a 6x6 map) or larger inputs.
  """
  inputs = tf.keras.Input(shape=input_shape, name="image")
  x = blocks.conv_module(inputs, 96, (3, 3))
  x = blocks.inception_module(x, 32, 32)
  x = blocks.inception_module(x, 32, 48)
  x = blocks.downsample_module(x, 80)
  x = blocks.inception_module(x, 112, 48)
  x = blocks.inception_module(x, 96, 64)
  x = blocks.inception_module(x, 80, 80)
  x = blocks.inception_module(x, 48, 96)
  x = blocks.downsample_module(x, 96)
  x = blocks.inception_module(x, 176, 160)
  x = blocks.inception_module(x, 176, 160)
  x = layers.AveragePooling2D(pool_size=tuple(x.shape[1:3]))(x)
  x = layers.Dropout(dropout)(x)
  x = layers.Flatten()(x)
  for layer in blocks.classifier_head(num_classes):
    x = layer(x)
  return tf.keras.Model(inputs, x, name="minigooglenet")


def _chain(input_shape, stack, name):
  inputs = tf.keras.Input(shape=input_shape, name="image")
  x = inputs
  for layer in stack:
    x = layer(x)
  return tf.keras.Model(inputs, x, name=name)


def mlp(input_shape, num_classes, hidden_units=256):
  """The MNIST styles tutorial MLP as a Functional model, named "mnist_model" as in the tutorial."""
  return _chain(input_shape, blocks.mlp_layers(num_classes, hidden_units), "mnist_model")


def shallownet(input_shape, num_classes):
  """ShallowNet as a Functional model (the Sequential one's twin)."""
  return _chain(input_shape, blocks.shallownet_layers(num_classes), "shallownet")


def minivggnet(input_shape, num_classes, **kwargs):
  """MiniVGGNet as a Functional model (the subclassed one's twin)."""
  return _chain(input_shape, blocks.minivgg_layers(num_classes, **kwargs), "minivggnet")


def _check_widths(**widths):
  """ValueError unless each of `widths` (a count, or a sequence of counts) is positive."""
  for key, value in widths.items():
    many = isinstance(value, (tuple, list))
    counts = value if many else (value,)
    if not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in counts):
      wanted = "positive integers, one per stage" if many else "a positive integer"
      raise ValueError(f"model.{key} must be {wanted}, got {value!r}.")


def fastcnn(input_shape, num_classes, filters=(32, 64), dense_units=256, dropout=0.3):
  """A small CNN for time to accuracy on 28x28 images (configs/fashion_mnist_fast.py).

  One bias-free Conv -> BN -> ReLU -> 2x2 max-pool per stage (BN makes a conv bias
  redundant), then Dense -> BN -> ReLU -> Dropout and the softmax head. Measured against
  wider, deeper and global-pooling variants in kmodels/docs/measurements.md "Speed".
  """
  _check_widths(filters=filters, dense_units=dense_units)
  inputs = tf.keras.Input(shape=input_shape, name="image")
  x = inputs
  for width in filters:
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    x = layers.MaxPooling2D()(x)
  x = layers.Flatten()(x)
  x = layers.Dense(dense_units, use_bias=False)(x)
  x = layers.Activation("relu")(layers.BatchNormalization()(x))
  x = layers.Dropout(dropout)(x)
  for layer in blocks.classifier_head(num_classes):
    x = layer(x)
  return tf.keras.Model(inputs, x, name="fastcnn")
