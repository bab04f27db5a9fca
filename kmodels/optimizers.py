"""Optimizers by name, built from `config.train.optimizer`."""

from absl import logging
import tensorflow as tf

from kmodels.errors import UserError


def steps_per_epoch(train_config, info):
  """train.steps_per_epoch, else one pass over train; None when its size is unknown."""
  if train_config.steps_per_epoch is None and info.train_examples is not None:
    return info.train_examples // train_config.batch_size
  return train_config.steps_per_epoch


def total_steps(train_config, info):
  """Training steps of the whole run, or None when the dataset's size is unknown."""
  per_epoch = steps_per_epoch(train_config, info)
  return train_config.epochs * per_epoch if per_epoch else None


def build_variables(optimizer, variables):
  """Creates the optimizer's slots (and moving averages) for `variables` now.

  Needed before a checkpoint restore that should fill them right away, and before
  training only part of the model (a frozen backbone): Keras' optimizer knows only the
  variables it was built with and refuses others later.
  """
  inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
  inner.build(variables)


# The learning rate in a config is for this global batch when scale_by_batch is on (the
# linear scaling rule of Goyal et al., as ImageNet recipes state it: 0.1 x batch / 256).
REFERENCE_BATCH = 256


def base_learning_rate(optimizer_config, batch_size=None):
  """train.optimizer.learning_rate, times batch / 256 when scale_by_batch is on."""
  lr = optimizer_config.learning_rate
  if optimizer_config.scale_by_batch and batch_size:
    return lr * batch_size / REFERENCE_BATCH
  return lr


@tf.keras.utils.register_keras_serializable("kmodels")
class FinetuneSchedule(tf.keras.optimizers.schedules.LearningRateSchedule):
  """`base` (a rate or schedule) until `boundary_step`, then `base` x `factor`: the head
  trains at the full rate while the backbone is frozen, the whole model at a fraction."""

  def __init__(self, base, boundary_step, factor):
    self.base, self.boundary_step, self.factor = base, boundary_step, factor

  def __call__(self, step):
    base = self.base(step) if callable(self.base) else tf.constant(self.base, tf.float32)
    finetuning = tf.cast(step, tf.int64) >= self.boundary_step
    return base * tf.where(finetuning, tf.cast(self.factor, base.dtype), tf.ones([], base.dtype))

  def get_config(self):
    base = (tf.keras.optimizers.schedules.serialize(self.base) if callable(self.base)
            else self.base)
    return {"base": base, "boundary_step": self.boundary_step, "factor": self.factor}

  @classmethod
  def from_config(cls, config):
    base = config["base"]
    if isinstance(base, dict):
      base = tf.keras.optimizers.schedules.deserialize(base)
    return cls(base, config["boundary_step"], config["factor"])


def learning_rate(optimizer_config, steps=None, batch_size=None, finetune_from_step=None):
  """The learning rate or schedule of `optimizer_config`; `steps`: the run's total steps;
  `finetune_from_step`: where a frozen backbone thaws (see FinetuneSchedule).

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
    schedule = tf.keras.optimizers.schedules.CosineDecay(
        lr / 10, decay_steps=max(1, steps - warmup), warmup_target=lr, warmup_steps=warmup)
  elif optimizer_config.time_decay:
    schedule = tf.keras.optimizers.schedules.InverseTimeDecay(
        lr, decay_steps=1, decay_rate=optimizer_config.time_decay)
  else:
    schedule = lr
  if finetune_from_step:
    return FinetuneSchedule(schedule, finetune_from_step, optimizer_config.finetune_lr_factor)
  return schedule


def check_schedule_kept(previous, current):
  """On a resume (`previous`, `current`: config dicts), a UserError when the learning-rate
  schedule laid out at the run's start would change length, and with it the rate.

  A cosine schedule spans the run's train.epochs x steps_per_epoch as they were at its
  start; constant and time-decay rates have no length, so those runs may train longer.
  """
  old, new = previous.get("train", {}), current["train"]
  if new["optimizer"]["schedule"] != "cosine":
    return
  changed = [f"train.{key} {old.get(key)!r} -> {new[key]!r}"
             for key in ("epochs", "steps_per_epoch") if old.get(key) != new[key]]
  if changed:
    raise UserError(
        f"This workdir's run started a cosine learning-rate schedule over "
        f"train.epochs={old.get('epochs')!r}, train.steps_per_epoch="
        f"{old.get('steps_per_epoch')!r}; resuming with {', '.join(changed)} would stretch "
        "it mid-run and make the learning rate jump. Resume with the run's own values, or "
        "train a longer schedule from the start: a new --workdir, or --overwrite.")


# time_decay > 0 decays a constant rate, as the CIFAR styles tutorial does.
SCHEDULES = ("constant", "cosine")

OPTIMIZERS = {
    "sgd": lambda c, lr, **kw: tf.keras.optimizers.SGD(lr, momentum=c.momentum, **kw),
    "adam": lambda c, lr, **kw: tf.keras.optimizers.Adam(lr, **kw),
}

# Variables weight decay leaves alone unless weight_decay_everything: biases and the
# scales and offsets of BatchNorm and LayerNorm (decaying them only fights normalization).
NO_DECAY_NAMES = ("bias", "gamma", "beta")


def build_optimizer(optimizer_config, steps=None, batch_size=None, finetune_from_step=None):
  """Creates the optimizer; call inside `strategy.scope()`. Names are validated upstream.

  weight_decay is decoupled (SGDW / AdamW: each step w -= lr x weight_decay x w, apart
  from the gradient), clip_global_norm clips all gradients together by their global norm,
  scale_by_batch multiplies the learning rate by batch / 256, ema_momentum keeps Keras'
  moving average of the weights, which replaces them when training ends
  (finalize_variable_values: fit calls it, the custom loop too).
  """
  lr = learning_rate(optimizer_config, steps, batch_size, finetune_from_step)
  if optimizer_config.scale_by_batch and batch_size:
    logging.info("Learning rate %g x batch %d / %d = %g (train.optimizer.scale_by_batch).",
                 optimizer_config.learning_rate, batch_size, REFERENCE_BATCH,
                 base_learning_rate(optimizer_config, batch_size))
  kwargs = {}
  if optimizer_config.weight_decay:
    kwargs["weight_decay"] = optimizer_config.weight_decay
  if optimizer_config.clip_global_norm:
    kwargs["global_clipnorm"] = optimizer_config.clip_global_norm
  if optimizer_config.ema_momentum is not None:
    kwargs.update(use_ema=True, ema_momentum=optimizer_config.ema_momentum)
  optimizer = OPTIMIZERS[optimizer_config.name](optimizer_config, lr, **kwargs)
  if optimizer_config.weight_decay and not optimizer_config.weight_decay_everything:
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
  return optimizer
