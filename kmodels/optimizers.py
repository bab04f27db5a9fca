"""Optimizers by name, built from `config.train.optimizer`."""

import tensorflow as tf

from kmodels.errors import UserError


def total_steps(train_config, info):
  """Training steps of the whole run, or None when the dataset's size is unknown."""
  per_epoch = train_config.steps_per_epoch
  if per_epoch is None and info.train_examples is not None:
    per_epoch = info.train_examples // train_config.batch_size
  return train_config.epochs * per_epoch if per_epoch else None


def learning_rate(optimizer_config, steps=None):
  """The learning rate or schedule of `optimizer_config`; `steps`: the run's total steps.

  constant: learning_rate. The CIFAR styles tutorial's time decay: lr / (1 + time_decay * step).
  cosine: a linear warm-up from lr/10 over `warmup_fraction` of the run, then cosine decay to 0
  at the last step (fewer epochs to a given accuracy: see BUILD_NOTES "Time to accuracy").
  """
  lr = optimizer_config.learning_rate
  if optimizer_config.schedule == "cosine":
    if not steps:
      raise UserError("train.optimizer.schedule='cosine' needs the run's length; the "
                      "dataset's size is unknown here, so set train.steps_per_epoch.")
    warmup = int(optimizer_config.warmup_fraction * steps)
    return tf.keras.optimizers.schedules.CosineDecay(
        lr / 10, decay_steps=max(1, steps - warmup), warmup_target=lr, warmup_steps=warmup)
  if optimizer_config.time_decay:
    return tf.keras.optimizers.schedules.InverseTimeDecay(
        lr, decay_steps=1, decay_rate=optimizer_config.time_decay)
  return lr


# time_decay > 0 decays a constant rate, as the CIFAR styles tutorial does.
SCHEDULES = ("constant", "cosine")

OPTIMIZERS = {
    "sgd": lambda c, lr: tf.keras.optimizers.SGD(lr, momentum=c.momentum),
    "adam": lambda c, lr: tf.keras.optimizers.Adam(lr),
}


def build_optimizer(optimizer_config, steps=None):
  """Creates the optimizer; call inside `strategy.scope()`. Names are validated upstream."""
  return OPTIMIZERS[optimizer_config.name](optimizer_config,
                                           learning_rate(optimizer_config, steps))
