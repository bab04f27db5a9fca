"""Models written by subclassing `tf.keras.Model`: layers in __init__, the forward pass in call.

Each model's constructor arguments are its config (`get_config`), and each class is
registered, so `from_config` and SavedModel reloads rebuild it by name.
"""

import tensorflow as tf

from kmodels.models import blocks

layers = tf.keras.layers


class _ConfigModel(tf.keras.Model):
  """A Model whose constructor arguments (named in `_config_keys`) are its config."""

  _config_keys = ()

  def get_config(self):
    config = {key: getattr(self, key) for key in self._config_keys}
    config["name"] = self.name
    return config


def _apply(stack, x, training):
  for layer in stack:
    takes_training = isinstance(layer, (layers.BatchNormalization, layers.Dropout))
    x = layer(x, training=training) if takes_training else layer(x)
  return x


@blocks.serializable
class MLP(_ConfigModel):
  """The MNIST styles tutorial MLP, subclassed."""

  _config_keys = ("num_classes", "hidden_units")

  def __init__(self, num_classes, hidden_units=256, name="mlp", **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes, self.hidden_units = num_classes, hidden_units
    self.flatten = layers.Flatten()
    self.hidden = layers.Dense(hidden_units, activation="relu")
    self.logits, self.softmax = blocks.classifier_head(num_classes)

  def call(self, inputs, training=False):
    return self.softmax(self.logits(self.hidden(self.flatten(inputs))))


@blocks.serializable
class ShallowNet(_ConfigModel):
  """ShallowNet, subclassed."""

  _config_keys = ("num_classes",)

  def __init__(self, num_classes, name="shallownet", **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes = num_classes
    self.conv = layers.Conv2D(32, (3, 3), padding="same")
    self.flatten = layers.Flatten()
    self.logits, self.softmax = blocks.classifier_head(num_classes)

  def call(self, inputs, training=False):
    return self.softmax(self.logits(self.flatten(tf.nn.relu(self.conv(inputs)))))


@blocks.serializable
class MiniVGGNet(_ConfigModel):
  """MiniVGGNet (the CIFAR styles tutorial): two [conv-relu-bn]x2 + max-pool stages, dense head."""

  _config_keys = ("num_classes", "filters", "dense_units", "dropout")

  def __init__(self,
               num_classes,
               filters=32,
               dense_units=512,
               dropout=0.5,
               name="minivggnet",
               **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes, self.filters = num_classes, filters
    self.dense_units, self.dropout = dense_units, dropout
    # The same layers in the same order as the Sequential and Functional twins, so that
    # weights copy across styles one to one.
    self.stack = blocks.minivgg_layers(num_classes, filters, dense_units, dropout)

  def call(self, inputs, training=False):
    return _apply(self.stack, inputs, training)


@blocks.serializable
class CifarModel(_ConfigModel):
  """The CIFAR training-loop tutorial: three ConvolutionLayers and a HeadLayer."""

  _config_keys = ("num_classes",)

  def __init__(self, num_classes, name="cifar_model", **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes = num_classes
    self.convolutions = [blocks.ConvolutionLayer(64) for _ in range(3)]
    self.head = blocks.HeadLayer(num_classes)

  def call(self, inputs, training=False):
    x = inputs
    for convolution in self.convolutions:
      x = convolution(x)
    return self.head(x)


@blocks.serializable
class ResNetLike(_ConfigModel):
  """ResBlocks [32,32,64] -> [128,128,256] -> [128,256,512] -> GAP -> logits.

  The MNIST subclassing tutorial's ResNet_Like.
  """

  _config_keys = ("num_classes",)

  def __init__(self, num_classes, name="resnet_like", **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes = num_classes
    self.res_blocks = [blocks.ResBlock(c) for c in ([32, 32, 64], [128, 128, 256], [128, 256, 512])]
    self.pool = layers.GlobalAveragePooling2D()
    self.classifier = layers.Dense(num_classes, dtype="float32", name="logits")

  def call(self, inputs, training=False):
    x = inputs
    for block in self.res_blocks:
      x = block(x, training=training)
    return self.classifier(self.pool(x))


@blocks.serializable
class MiniGoogLeNet(_ConfigModel):
  """MiniGoogLeNet built from reusable Inception/Downsample Layers (the Functional twin)."""

  _config_keys = ("num_classes", "dropout")

  def __init__(self, num_classes, dropout=0.5, name="minigooglenet", **kwargs):
    super().__init__(name=name, **kwargs)
    self.num_classes, self.dropout = num_classes, dropout
    self.modules_ = [
        blocks.ConvModule(96, (3, 3)),
        blocks.InceptionModule(32, 32),
        blocks.InceptionModule(32, 48),
        blocks.DownsampleModule(80),
        blocks.InceptionModule(112, 48),
        blocks.InceptionModule(96, 64),
        blocks.InceptionModule(80, 80),
        blocks.InceptionModule(48, 96),
        blocks.DownsampleModule(96),
        blocks.InceptionModule(176, 160),
        blocks.InceptionModule(176, 160),
    ]
    # Averaging the whole last map equals the CIFAR styles tutorial's 7x7 pool at 32x32 inputs.
    self.pool = layers.GlobalAveragePooling2D()
    self.drop = layers.Dropout(dropout)
    self.logits, self.softmax = blocks.classifier_head(num_classes)

  def call(self, inputs, training=False):
    x = inputs
    for module in self.modules_:
      x = module(x, training=training)
    x = self.drop(self.pool(x), training=training)
    return self.softmax(self.logits(x))


def build(cls, input_shape, num_classes, **kwargs):
  """Creates a subclassed model and its weights (subclassed models build lazily)."""
  model = cls(num_classes, **kwargs)
  model.build((None, *input_shape))
  return model
