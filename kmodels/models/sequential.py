"""Models written in the Sequential style."""

import tensorflow as tf

from kmodels.models import blocks

layers = tf.keras.layers


def shallownet(input_shape, num_classes):
  """ShallowNet (SEEDS.md A): one 3x3 conv, then a linear classifier.

  328,586 parameters at 32x32x3 with 10 classes.
  """
  return tf.keras.Sequential(
      [
          tf.keras.Input(shape=input_shape, name="image"),
          layers.Conv2D(32, (3, 3), padding="same"),
          layers.Activation("relu"),
          layers.Flatten(),
          *blocks.classifier_head(num_classes),
      ],
      name="shallownet",
  )


def mlp(input_shape, num_classes, hidden_units=256):
  """The seed C multi-layer perceptron: Flatten -> Dense(256, relu) -> Dense(classes)."""
  return tf.keras.Sequential(
      [
          tf.keras.Input(shape=input_shape, name="image"),
          layers.Flatten(),
          layers.Dense(hidden_units, activation="relu"),
          *blocks.classifier_head(num_classes),
      ],
      name="mlp",
  )
