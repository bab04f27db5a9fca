"""Models written in the Functional style."""

import tensorflow as tf

from kmodels.models import blocks

layers = tf.keras.layers


def minigooglenet(input_shape, num_classes, dropout=0.5):
  """MiniGoogLeNet (SEEDS.md A), 1,656,250 parameters at 32x32x3 with 10 classes.

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
