"""Building blocks shared by the model definitions.

The MiniGoogLeNet modules follow Zhang et al. 2017 ("Understanding deep learning requires
rethinking generalization"), as the CIFAR styles tutorial builds them (conv modules,
inception modules of two branches, downsample modules).
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


# ------------------------------------------------------------------ reusable Layer classes
# Registered so SavedModel reloads and `from_config` find them by name.
serializable = tf.keras.utils.register_keras_serializable(package="kmodels")


class _ConfigLayer(layers.Layer):
  """A Layer whose constructor arguments are its config (`_config_keys` names them)."""

  _config_keys = ()

  def get_config(self):
    config = super().get_config()
    config.update({key: getattr(self, key) for key in self._config_keys})
    return config


@serializable
class ConvModule(_ConfigLayer):
  """Layer form of `conv_module`: Conv2D -> BatchNorm -> ReLU."""

  _config_keys = ("filters", "kernel_size", "strides", "padding")

  def __init__(self, filters, kernel_size, strides=(1, 1), padding="same", **kwargs):
    super().__init__(**kwargs)
    self.filters, self.kernel_size = filters, tuple(kernel_size)
    self.strides, self.padding = tuple(strides), padding
    self.conv = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding)
    self.bn = layers.BatchNormalization()

  def call(self, x, training=False):
    return tf.nn.relu(self.bn(self.conv(x), training=training))


@serializable
class InceptionModule(_ConfigLayer):
  """Layer form of `inception_module`: 1x1 and 3x3 ConvModules, concatenated."""

  _config_keys = ("filters_1x1", "filters_3x3")

  def __init__(self, filters_1x1, filters_3x3, **kwargs):
    super().__init__(**kwargs)
    self.filters_1x1, self.filters_3x3 = filters_1x1, filters_3x3
    self.branch_1x1 = ConvModule(filters_1x1, (1, 1))
    self.branch_3x3 = ConvModule(filters_3x3, (3, 3))

  def call(self, x, training=False):
    return tf.concat([self.branch_1x1(x, training=training),
                      self.branch_3x3(x, training=training)],
                     axis=-1)


@serializable
class DownsampleModule(_ConfigLayer):
  """Layer form of `downsample_module`: strided 3x3 ConvModule beside a 3x3/2 max-pool."""

  _config_keys = ("filters",)

  def __init__(self, filters, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.conv = ConvModule(filters, (3, 3), strides=(2, 2), padding="valid")
    self.pool = layers.MaxPooling2D((3, 3), strides=(2, 2))

  def call(self, x, training=False):
    return tf.concat([self.conv(x, training=training), self.pool(x)], axis=-1)


@serializable
class ConvolutionLayer(_ConfigLayer):
  """The CIFAR training-loop tutorial: Conv2D (3x3 valid, ReLU) followed by a 2x2 max-pool."""

  _config_keys = ("filters", "kernel_size")

  def __init__(self, filters=64, kernel_size=3, **kwargs):
    super().__init__(**kwargs)
    self.filters, self.kernel_size = filters, kernel_size
    self.conv = layers.Conv2D(filters, kernel_size, activation="relu")
    self.pool = layers.MaxPooling2D(2)

  def call(self, x):
    return self.pool(self.conv(x))


@serializable
class HeadLayer(_ConfigLayer):
  """Flatten -> Dense(128, ReLU) -> Dense(classes) -> float32 softmax.

  The head of the CIFAR training-loop tutorial's CNN.
  """

  _config_keys = ("num_classes", "hidden_units")

  def __init__(self, num_classes, hidden_units=128, **kwargs):
    super().__init__(**kwargs)
    self.num_classes, self.hidden_units = num_classes, hidden_units
    self.flatten = layers.Flatten()
    self.hidden = layers.Dense(hidden_units, activation="relu")
    self.logits, self.softmax = classifier_head(num_classes)

  def call(self, x):
    return self.softmax(self.logits(self.hidden(self.flatten(x))))


@serializable
class CNNBlock(_ConfigLayer):
  """Conv2D (same) -> BatchNorm -> ReLU, `training` passed to BatchNorm.

  The MNIST subclassing tutorial's block.
  """

  _config_keys = ("out_channels", "kernel_size")

  def __init__(self, out_channels, kernel_size=3, **kwargs):
    super().__init__(**kwargs)
    self.out_channels, self.kernel_size = out_channels, kernel_size
    self.conv = layers.Conv2D(out_channels, kernel_size, padding="same")
    self.bn = layers.BatchNormalization()

  def call(self, x, training=False):
    return tf.nn.relu(self.bn(self.conv(x), training=training))


@serializable
class ResBlock(_ConfigLayer):
  """Three CNNBlocks with a 1x1 identity mapping added before the third, then pool.

  The MNIST subclassing tutorial's residual block.
  """

  _config_keys = ("channels",)

  def __init__(self, channels, **kwargs):
    super().__init__(**kwargs)
    self.channels = list(channels)
    self.cnn1, self.cnn2, self.cnn3 = (CNNBlock(c) for c in self.channels)
    self.identity_mapping = layers.Conv2D(self.channels[1], 1, padding="same")
    self.pool = layers.MaxPooling2D()

  def call(self, x, training=False):
    y = self.cnn2(self.cnn1(x, training=training), training=training)
    y = self.cnn3(y + self.identity_mapping(x), training=training)
    return self.pool(y)


# --------------------------------------------- layer lists shared by Sequential/Functional


def mlp_layers(num_classes, hidden_units=256):
  """The MNIST styles tutorial MLP: Flatten -> Dense(hidden, ReLU) -> Dense(classes) -> softmax."""
  return [
      layers.Flatten(),
      layers.Dense(hidden_units, activation="relu"), *classifier_head(num_classes)
  ]


def shallownet_layers(num_classes):
  """ShallowNet: Conv2D 32 3x3 same -> ReLU -> Flatten -> Dense(classes) -> softmax."""
  return [
      layers.Conv2D(32, (3, 3), padding="same"),
      layers.Activation("relu"),
      layers.Flatten(), *classifier_head(num_classes)
  ]


def minivgg_layers(num_classes, filters=32, dense_units=512, dropout=0.5):
  """MiniVGGNet: 2 x ([Conv -> ReLU -> BN] x 2 -> MaxPool) -> Dense -> ReLU -> BN -> Dropout."""
  stack = []
  for _ in range(2):
    for _ in range(2):
      stack += [
          layers.Conv2D(filters, (3, 3), padding="same"),
          layers.Activation("relu"),
          layers.BatchNormalization()
      ]
    stack.append(layers.MaxPooling2D((2, 2)))
  return stack + [
      layers.Flatten(),
      layers.Dense(dense_units),
      layers.Activation("relu"),
      layers.BatchNormalization(),
      layers.Dropout(dropout), *classifier_head(num_classes)
  ]


def cifar_cnn_layers(num_classes):
  """3 x (Conv2D 64 3x3 valid ReLU -> MaxPool) -> Dense 128 ReLU -> softmax.

  The CIFAR training-loop tutorial's CNN.
  """
  stack = []
  for _ in range(3):
    stack += [layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(2)]
  return stack + [
      layers.Flatten(),
      layers.Dense(128, activation="relu"), *classifier_head(num_classes)
  ]
