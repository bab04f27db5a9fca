"""Building blocks shared by the model definitions.

The MiniGoogLeNet modules follow Zhang et al. 2017 ("Understanding deep learning requires
rethinking generalization"), as specified in SEEDS.md section A.
"""

import tensorflow as tf

layers = tf.keras.layers


def conv_module(x, filters, kernel_size, strides=(1, 1), padding="same"):
  """Conv2D -> BatchNorm -> ReLU, the unit every MiniGoogLeNet module is made of."""
  x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding)(x)
  x = layers.BatchNormalization()(x)
  return layers.Activation("relu")(x)


def inception_module(x, filters_1x1, filters_3x3):
  """Two parallel conv_modules (1x1 and 3x3) concatenated along channels."""
  branch_1x1 = conv_module(x, filters_1x1, (1, 1))
  branch_3x3 = conv_module(x, filters_3x3, (3, 3))
  return layers.Concatenate(axis=-1)([branch_1x1, branch_3x3])


def downsample_module(x, filters):
  """Halves the spatial size: a strided 3x3 conv beside a 3x3/2 max-pool, concatenated."""
  conv = conv_module(x, filters, (3, 3), strides=(2, 2), padding="valid")
  pool = layers.MaxPooling2D((3, 3), strides=(2, 2))(x)
  return layers.Concatenate(axis=-1)([conv, pool])


def classifier_head(num_classes, name="predictions"):
  """Dense logits followed by a float32 softmax.

  The softmax is pinned to float32 so that under a mixed precision policy the
  probabilities (and therefore the loss) are computed at full precision.
  """
  return [
      layers.Dense(num_classes, name=f"{name}_logits"),
      layers.Activation("softmax", dtype="float32", name=name),
  ]
