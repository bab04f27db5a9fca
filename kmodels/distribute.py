"""One place that turns `config.distribution` into a `tf.distribute.Strategy`.

Models, optimizers and metrics must be created inside `strategy.scope()`; the trainer
does that. `train.batch_size` is global: each replica gets batch_size / replicas.
"""

from absl import logging
import tensorflow as tf

from kmodels.errors import UserError


def _default(distribution_config):
  del distribution_config
  return tf.distribute.get_strategy()


def _one_device(distribution_config):
  devices = parse_devices(distribution_config.devices) or ["/cpu:0"]
  if len(devices) != 1:
    raise UserError(f"distribution.strategy=one_device takes one device, got {devices}.")
  return tf.distribute.OneDeviceStrategy(devices[0])


def _mirrored(distribution_config):
  # None: every visible GPU, or the CPU when there is none.
  return tf.distribute.MirroredStrategy(parse_devices(distribution_config.devices))


STRATEGIES = {
    "default": _default,
    "one_device": _one_device,
    "mirrored": _mirrored,
}


def parse_devices(devices):
  """"cpu:0,gpu:1" -> ["/cpu:0", "/gpu:1"], each checked to exist; None or "" -> None."""
  if not devices:
    return None
  requested = ["/" + d.strip().lstrip("/") for d in devices.split(",") if d.strip()]
  available = {_device_key(d.name): d.name for d in tf.config.list_logical_devices()}
  missing = [d for d in requested if _device_key(d) not in available]
  if missing:
    raise UserError(f"distribution.devices {devices!r}: no device {', '.join(missing)} on "
                    f"this machine. Available: {', '.join(available.values())}.")
  return requested


def _device_key(name):
  spec = tf.DeviceSpec.from_string(name)
  return (spec.device_type or "").upper(), spec.device_index


def get_strategy(distribution_config):
  """Creates the strategy named by `distribution_config.strategy`."""
  name = distribution_config.strategy
  if name not in STRATEGIES:
    raise UserError(f"Unknown distribution.strategy {name!r}. Choose one of: "
                    f"{', '.join(STRATEGIES)}.")
  try:
    strategy = STRATEGIES[name](distribution_config)
  except (ValueError, RuntimeError) as e:
    raise UserError(f"Could not create the {name!r} strategy with devices "
                    f"{distribution_config.devices!r}: {e}") from e
  logging.info("Strategy %s with %d replica(s).", type(strategy).__name__,
               strategy.num_replicas_in_sync)
  return strategy


def per_replica_batch_size(global_batch_size, strategy):
  """Splits the global batch evenly over replicas, or explains why it can't."""
  replicas = strategy.num_replicas_in_sync
  if global_batch_size % replicas:
    raise UserError(
        f"train.batch_size {global_batch_size} does not divide by the {replicas} replicas "
        f"of this strategy; use a multiple of {replicas}, e.g. "
        f"--config.train.batch_size={max(replicas, global_batch_size // replicas * replicas)}.")
  return global_batch_size // replicas
