"""Optimizers by name, built from `config.train.optimizer`."""

import tensorflow as tf


def learning_rate(optimizer_config):
  """A constant rate, or seed A's time-based decay lr / (1 + decay * step)."""
  if optimizer_config.time_decay:
    return tf.keras.optimizers.schedules.InverseTimeDecay(
        optimizer_config.learning_rate, decay_steps=1, decay_rate=optimizer_config.time_decay)
  return optimizer_config.learning_rate


OPTIMIZERS = {
    "sgd": lambda c: tf.keras.optimizers.SGD(learning_rate(c), momentum=c.momentum),
    "adam": lambda c: tf.keras.optimizers.Adam(learning_rate(c)),
}


def build_optimizer(optimizer_config):
  """Creates the optimizer; call inside `strategy.scope()`. Names are validated upstream."""
  return OPTIMIZERS[optimizer_config.name](optimizer_config)
