"""Models written by subclassing `tf.keras.Model`."""

import tensorflow as tf

from kmodels.models import blocks

layers = tf.keras.layers


class MiniVGGNet(tf.keras.Model):
  """MiniVGGNet (SEEDS.md A): two [conv-relu-bn]x2 + max-pool stages, then a dense head."""

  def __init__(self, num_classes, filters=32, dense_units=512, dropout=0.5, **kwargs):
    kwargs.setdefault("name", "minivggnet")
    super().__init__(**kwargs)
    self.num_classes = num_classes
    self.filters = filters
    self.dense_units = dense_units
    self.dropout_rate = dropout
    self.features = [self._stage(filters) for _ in range(2)]
    self.flatten = layers.Flatten()
    self.hidden = layers.Dense(dense_units)
    self.hidden_relu = layers.Activation("relu")
    self.hidden_bn = layers.BatchNormalization()
    self.dropout = layers.Dropout(dropout)
    self.head = blocks.classifier_head(num_classes)

  @staticmethod
  def _stage(filters):
    stage = []
    for _ in range(2):
      stage += [
          layers.Conv2D(filters, (3, 3), padding="same"),
          layers.Activation("relu"),
          layers.BatchNormalization(),
      ]
    return stage + [layers.MaxPooling2D((2, 2))]

  def call(self, inputs, training=False):
    x = inputs
    for stage in self.features:
      for layer in stage:
        x = layer(x, training=training) if _takes_training(layer) else layer(x)
    x = self.flatten(x)
    x = self.hidden_bn(self.hidden_relu(self.hidden(x)), training=training)
    x = self.dropout(x, training=training)
    for layer in self.head:
      x = layer(x)
    return x

  def get_config(self):
    return {
        "num_classes": self.num_classes,
        "filters": self.filters,
        "dense_units": self.dense_units,
        "dropout": self.dropout_rate,
        "name": self.name,
    }


def _takes_training(layer):
  return isinstance(layer, (layers.BatchNormalization, layers.Dropout))


def minivggnet(input_shape, num_classes, **kwargs):
  """Builds MiniVGGNet and its weights for `input_shape` (subclassed models build lazily)."""
  model = MiniVGGNet(num_classes, **kwargs)
  model.build((None, *input_shape))
  return model
