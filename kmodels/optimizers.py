"""Optimizers by name, built from `config.train.optimizer`."""

from absl import logging
import tensorflow as tf

from kmodels.errors import UserError


def total_steps(train_config, info):
  """Training steps of the whole run, or None when the dataset's size is unknown."""
  per_epoch = train_config.steps_per_epoch
  if per_epoch is None and info.train_examples is not None:
    per_epoch = info.train_examples // train_config.batch_size
  return train_config.epochs * per_epoch if per_epoch else None


# The learning rate in a config is for this global batch when scale_by_batch is on (the
# linear scaling rule of Goyal et al., as ImageNet recipes state it: 0.1 x batch / 256).
REFERENCE_BATCH = 256


def base_learning_rate(optimizer_config, batch_size=None):
  """train.optimizer.learning_rate, times batch / 256 when scale_by_batch is on."""
  lr = optimizer_config.learning_rate
  if optimizer_config.scale_by_batch and batch_size:
    return lr * batch_size / REFERENCE_BATCH
  return lr


def learning_rate(optimizer_config, steps=None, batch_size=None):
  """The learning rate or schedule of `optimizer_config`; `steps`: the run's total steps.

  constant: learning_rate. The CIFAR styles tutorial's time decay: lr / (1 + time_decay * step).
  cosine: a linear warm-up from lr/10 over `warmup_fraction` of the run, then cosine decay to 0
  at the last step (fewer epochs to a given accuracy: see BUILD_NOTES "Time to accuracy").
  """
  lr = base_learning_rate(optimizer_config, batch_size)
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
    "sgd": lambda c, lr, **kw: tf.keras.optimizers.SGD(lr, momentum=c.momentum, **kw),
    "adam": lambda c, lr, **kw: tf.keras.optimizers.Adam(lr, **kw),
}

# Variables weight decay leaves alone unless weight_decay_everything: biases and the
# scales and offsets of BatchNorm and LayerNorm (decaying them only fights normalization).
NO_DECAY_NAMES = ("bias", "gamma", "beta")


def build_optimizer(optimizer_config, steps=None, batch_size=None):
  """Creates the optimizer; call inside `strategy.scope()`. Names are validated upstream.

  weight_decay is decoupled (SGDW / AdamW: each step w -= lr x weight_decay x w, apart
  from the gradient), clip_global_norm clips all gradients together by their global norm,
  scale_by_batch multiplies the learning rate by batch / 256.
  """
  lr = learning_rate(optimizer_config, steps, batch_size)
  if optimizer_config.scale_by_batch and batch_size:
    logging.info("Learning rate %g x batch %d / %d = %g (train.optimizer.scale_by_batch).",
                 optimizer_config.learning_rate, batch_size, REFERENCE_BATCH,
                 base_learning_rate(optimizer_config, batch_size))
  kwargs = {}
  if optimizer_config.weight_decay:
    kwargs["weight_decay"] = optimizer_config.weight_decay
  if optimizer_config.clip_global_norm:
    kwargs["global_clipnorm"] = optimizer_config.clip_global_norm
  optimizer = OPTIMIZERS[optimizer_config.name](optimizer_config, lr, **kwargs)
  if optimizer_config.weight_decay and not optimizer_config.weight_decay_everything:
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
  return optimizer
