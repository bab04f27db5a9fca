"""The model registry: one explicit dict from name to builder.

Every builder has the signature `build(input_shape, num_classes, **kwargs)` and returns
an uncompiled `tf.keras.Model`. The launcher picks one by `config.model.name`; the other
keys of `config.model` are passed as keyword arguments.
"""

import collections

from kmodels.errors import UserError
from kmodels.models import functional, sequential, subclassed

ModelEntry = collections.namedtuple("ModelEntry", ["build", "style", "description"])

REGISTRY = {
    "mlp": ModelEntry(sequential.mlp, "sequential", "Flatten -> Dense 256 -> softmax (seed C)"),
    "shallownet": ModelEntry(
        sequential.shallownet, "sequential", "one conv + linear classifier (seed A)"),
    "minigooglenet": ModelEntry(
        functional.minigooglenet, "functional", "Inception-style CIFAR net (seed A)"),
    "minivggnet": ModelEntry(
        subclassed.minivggnet, "subclassed", "two VGG stages + dense head (seed A)"),
}


def model_names():
  """`name (style)` for every registered model, for error messages and docs."""
  return [f"{name} ({entry.style})" for name, entry in sorted(REGISTRY.items())]


def build_model(name, input_shape, num_classes, **kwargs):
  """Builds the registered model `name` for images of `input_shape` and `num_classes`."""
  if name not in REGISTRY:
    raise UserError(
        f"Unknown model.name {name!r}. Registered models: {', '.join(model_names())}.")
  try:
    return REGISTRY[name].build(tuple(input_shape), num_classes, **kwargs)
  except TypeError as e:
    raise UserError(f"model {name!r} does not accept these model.* settings "
                    f"{sorted(kwargs)}: {e}") from e
