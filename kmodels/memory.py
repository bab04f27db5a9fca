"""Will a training step fit in memory? Estimated before the first step.

A batch too big for the host is a user's setting, but TensorFlow on a CPU host meets it
late and badly: configs/imagenet_resnet50.py as shipped (global batch 1024 at 224 px) asked
for 66 GB in its first step on a 24 GB host, printed a ResourceExhausted traceback and then
died in the allocator ("double free or corruption", exit 134), past any handler. So the
step's memory is estimated from the built model before training starts:

  per example: the elements of every layer's output, in the compute dtype (float32, or
               2 bytes under mixed precision): what the backward pass keeps, roughly;
  fixed:       weights, their gradients and two optimizer slots, in float32.

Measured against a step's peak memory (kmodels/docs/measurements.md "Step-memory
calibration"), the per-example part over-estimates by 1.0-1.7x (oneDNN fuses and frees
some outputs), so the check refuses only what clearly cannot fit (MARGIN) and suggests a
batch the estimate itself allows. Where it cannot estimate (a subclassed model, whose
layers' outputs Keras never saw), ResourceExhausted in the first step is turned into the
same message (`refused_after`).
"""

import dataclasses
import re
import typing

import numpy as np
import tensorflow as tf

from kmodels import cpus
from kmodels.errors import UserError

# Refuse when the estimate exceeds the usable memory by this factor: the estimate is a
# rule of thumb, and a run that might fit should be tried.
MARGIN = 1.5
# Bytes per weight during a step: the weight, its gradient and Adam's two slots.
_BYTES_PER_PARAMETER = 4 * 4


@dataclasses.dataclass
class StepEstimate:
  per_example_bytes: int
  fixed_bytes: int

  def bytes(self, batch_size):
    return self.fixed_bytes + batch_size * self.per_example_bytes

  def largest_batch(self, usable_bytes):
    """The largest power of two whose step fits in `usable_bytes` (0: not even 1)."""
    most = int((usable_bytes - self.fixed_bytes) // self.per_example_bytes)
    return 1 << (most.bit_length() - 1) if most >= 1 else 0


def _leaf_layers(model):
  for layer in model.layers:
    if isinstance(layer, tf.keras.Model):
      yield from _leaf_layers(layer)
    else:
      yield layer


def _output_elements(layer):
  """Elements per example of the layer's outputs, or None if Keras does not know them."""
  try:
    outputs = tf.nest.flatten(layer.output)
  except (AttributeError, ValueError, RuntimeError):
    return None
  total = 0
  for output in outputs:
    shape = output.shape[1:]
    if not shape.is_fully_defined():
      return None
    total += int(np.prod(shape))
  return total


def estimate(model) -> typing.Optional[StepEstimate]:
  """The step's memory for `model` (a built Sequential or functional model), or None."""
  if not (isinstance(model, tf.keras.Sequential) or model._is_graph_network):  # pylint: disable=protected-access
    return None
  elements = 0
  compute_bytes = 4
  for layer in _leaf_layers(model):
    if isinstance(layer, tf.keras.layers.InputLayer):
      continue
    counted = _output_elements(layer)
    if counted is None:
      return None
    elements += counted
    compute_bytes = min(compute_bytes, tf.as_dtype(layer.compute_dtype or "float32").size)
  return StepEstimate(per_example_bytes=elements * compute_bytes,
                      fixed_bytes=_BYTES_PER_PARAMETER * model.count_params())


def _gb(value):
  return f"{value / 1e9:.1f} GB"


def _message(batch_size, replicas, image_shape, needed, usable, fits):
  suggestion = (f"--config.train.batch_size={fits * replicas} fits"
                if fits else "no batch fits: use a smaller model or image size")
  return (f"train.batch_size {batch_size} ({batch_size // replicas} per replica) at "
          f"{'x'.join(map(str, image_shape))} needs about {_gb(needed)} of this host's "
          f"memory per training step, more than it has ({_gb(usable)} usable); "
          f"{suggestion} (or a host with more memory). Nothing was trained; the workdir is "
          "as it was.")


def check_fits(model, batch_size, replicas, image_shape, local_replicas=1, usable_bytes=None):
  """A UserError before training when the step clearly cannot fit in host memory.

  `replicas` share the global `batch_size`; `local_replicas` of them run on this host
  (CPU devices: all of them hold their share of the step in the host's memory).
  """
  step = estimate(model)
  if step is None:
    return
  usable = usable_bytes if usable_bytes is not None else cpus.usable_memory_bytes()
  per_replica = max(batch_size // replicas, 1)
  needed = step.bytes(per_replica) * local_replicas
  if needed > MARGIN * usable:
    fits = step.largest_batch(usable / local_replicas)
    raise UserError(_message(batch_size, replicas, image_shape, needed, usable, fits))


def is_out_of_memory(error):
  """Whether a ResourceExhaustedError is memory (TensorFlow raises it for a full disk too:
  "No space left on device" from SaveV2)."""
  message = error.message.lower()
  return "no space left" not in message and ("oom" in message or "alloc" in message or
                                             "out of memory" in message)


def refused_after(error, batch_size, replicas, image_shape):
  """The UserError for a ResourceExhaustedError met in training (the estimate missed)."""
  usable = cpus.usable_memory_bytes()
  return UserError(
      f"train.batch_size {batch_size} at {'x'.join(map(str, image_shape))} ran out of memory "
      f"in a training step ({error.message.splitlines()[0][:200]}); the host has "
      f"{_gb(usable)} usable. Try a smaller train.batch_size (half: "
      f"--config.train.batch_size={max(batch_size // 2, 1)}). Checkpoints are kept.")


def model_refused(error, name, settings):
  """The UserError for a ResourceExhaustedError met building a model: a weight bigger
  than this host's memory (model.* widths set too large)."""
  found = re.search(r"OOM when allocating tensor with shape\[[^\]]*\] and type \w+", error.message)
  allocation = found.group(0) if found else error.message.splitlines()[0][:200]
  return UserError(f"model {name!r} with model.* settings {settings or 'none'} does not fit in "
                   f"this host's memory ({_gb(cpus.usable_memory_bytes())} usable): "
                   f"{allocation}. Use smaller widths.")
