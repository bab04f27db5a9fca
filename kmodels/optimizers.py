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
  """Training steps (batches) of the whole run, or None when the dataset's size is unknown."""
  per_epoch = steps_per_epoch(train_config, info)
  return train_config.epochs * per_epoch if per_epoch else None


def optimizer_steps(train_config, steps):
  """The optimizer's updates in `steps` training steps: one per train.accumulate_steps
  batches. Learning-rate schedules count these, so a run with accumulation follows the
  same rate curve as the run with the larger batch it stands for."""
  return steps // train_config.accumulate_steps if steps else steps


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
    base = (tf.keras.optimizers.schedules.serialize(self.base)
            if callable(self.base) else self.base)
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
  at the last step (fewer epochs to a given accuracy: see kmodels/docs/measurements.md "Speed").
  """
  lr = base_learning_rate(optimizer_config, batch_size)
  if optimizer_config.schedule == "cosine":
    if not steps:
      raise UserError("train.optimizer.schedule='cosine' needs the run's length; the "
                      "dataset's size is unknown here, so set train.steps_per_epoch.")
    warmup = int(optimizer_config.warmup_fraction * steps)
    schedule = tf.keras.optimizers.schedules.CosineDecay(lr / 10,
                                                         decay_steps=max(1, steps - warmup),
                                                         warmup_target=lr,
                                                         warmup_steps=warmup)
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
  schedule laid out at the run's start would change length, and with it the rate, or
  when gradient accumulation would change (its optimizer variables are in the checkpoint).

  A cosine schedule spans the run's train.epochs x steps_per_epoch as they were at its
  start; constant and time-decay rates have no length, so those runs may train longer.
  """
  old, new = previous.get("train", {}), current["train"]
  if old.get("accumulate_steps", 1) != new["accumulate_steps"]:
    raise UserError(
        f"This workdir's run updates once per train.accumulate_steps="
        f"{old.get('accumulate_steps', 1)} steps and keeps the gradients of its pending "
        f"steps in its checkpoint; it cannot resume with {new['accumulate_steps']}. Resume "
        "with the run's own value, or start anew: a new --workdir, or --overwrite.")
  if new["optimizer"]["schedule"] != "cosine":
    return
  changed = [
      f"train.{key} {old.get(key)!r} -> {new[key]!r}" for key in ("epochs", "steps_per_epoch")
      if old.get(key) != new[key]
  ]
  if changed:
    raise UserError(
        f"This workdir's run started a cosine learning-rate schedule over "
        f"train.epochs={old.get('epochs')!r}, train.steps_per_epoch="
        f"{old.get('steps_per_epoch')!r}; resuming with {', '.join(changed)} would stretch "
        "it mid-run and make the learning rate jump. Resume with the run's own values, or "
        "train a longer schedule from the start: a new --workdir, or --overwrite.")


class _Accumulating:
  """Gradient accumulation for a Keras optimizer class (the mixin goes first in the MRO).

  apply_gradients adds each step's gradients, summed over replicas as the optimizer would
  sum them, into one accumulator per variable; every `accumulate_steps`-th call the
  optimizer proper applies their mean and the accumulators restart. N steps of batch B so
  update the weights as one step of batch N x B (each step's loss is already a mean over
  its batch): clipping, weight decay, EMA and `iterations` (which schedules read) act once
  per update. The accumulators and the count of pending steps are optimizer variables,
  so a checkpoint taken between updates resumes them. Under a LossScaleOptimizer this is
  the inner optimizer: a step with overflowing gradients is skipped, not accumulated.
  """

  def __init__(self, *args, accumulate_steps, **kwargs):
    super().__init__(*args, **kwargs)
    self.accumulate_steps = accumulate_steps

  def build(self, var_list):
    if getattr(self, "_built", False):
      return
    super().build(var_list)
    self._accumulated = [self.add_variable_from_reference(v, "accumulated") for v in var_list]
    # Steps added since the last update; float32 (it never exceeds accumulate_steps) so it
    # can live beside the first weight like any slot.
    self._pending_steps = self.add_variable_from_reference(var_list[0],
                                                           "pending_steps",
                                                           shape=(),
                                                           initial_value=0.0)

  def _accumulator(self, variable):
    return self._accumulated[self._index_dict[self._var_key(variable)]]

  def apply_gradients(self, grads_and_vars, name=None, skip_gradients_aggregation=False, **kwargs):
    """Called in replica context, as Keras calls it (a LossScaleOptimizer too)."""
    grads_and_vars = list(grads_and_vars)
    variables = [v for _, v in grads_and_vars]
    with tf.init_scope():
      self.build(variables)
    if kwargs.pop("experimental_aggregate_gradients", True) and not skip_gradients_aggregation:
      grads_and_vars = self.aggregate_gradients(grads_and_vars)
    strategy = self._distribution_strategy
    for grad, var in grads_and_vars:
      strategy.extended.update(self._accumulator(var), _add, args=(grad,), group=False)
    strategy.extended.update(self._pending_steps, _add, args=(1.0,), group=False)

    def update():  # in replica context: the optimizer proper, then the accumulators restart
      means = [self._accumulator(v) / self.accumulate_steps for v in variables]
      super(_Accumulating, self).apply_gradients(zip(means, variables),
                                                 name=name,
                                                 skip_gradients_aggregation=True)
      for accumulator in [*map(self._accumulator, variables), self._pending_steps]:
        strategy.extended.update(accumulator, _zero, group=False)

    def due():
      return tf.greater_equal(tf.convert_to_tensor(self._pending_steps),
                              float(self.accumulate_steps))

    if tf.__internal__.distribute.strategy_supports_no_merge_call():
      tf.cond(due(), lambda: _then_true(update), lambda: tf.constant(False))
    else:
      # As Keras' LossScaleOptimizer: a cond whose branch merges (the update does) must run
      # in cross-replica context, its branch back in each replica.
      def cross_replica(distribution):
        tf.cond(due(), lambda: _then_true(distribution.extended.call_for_each_replica, update),
                lambda: tf.constant(False))

      tf.distribute.get_replica_context().merge_call(cross_replica)
    return self.iterations

  def get_config(self):
    return {**super().get_config(), "accumulate_steps": self.accumulate_steps}


def _add(variable, value):
  return variable.assign_add(tf.cast(value, variable.dtype))


def _zero(variable):
  return variable.assign(tf.zeros_like(variable))


def _then_true(fn, *args):
  """Runs fn(*args) for its effects, then True: both branches of the cond return a bool."""
  fn(*args)
  return tf.constant(True)


def _accumulating(optimizer_class):
  """`optimizer_class` with gradient accumulation (see _Accumulating)."""
  return type(f"Accumulating{optimizer_class.__name__}", (_Accumulating, optimizer_class), {})


# time_decay > 0 decays a constant rate, as the CIFAR styles tutorial does.
SCHEDULES = ("constant", "cosine")

OPTIMIZER_CLASSES = {"sgd": tf.keras.optimizers.SGD, "adam": tf.keras.optimizers.Adam}
OPTIMIZERS = tuple(OPTIMIZER_CLASSES)


def _own_kwargs(optimizer_config):
  """The settings of train.optimizer that only one optimizer takes."""
  return {"momentum": optimizer_config.momentum} if optimizer_config.name == "sgd" else {}


# Variables weight decay leaves alone unless weight_decay_everything: biases and the
# scales and offsets of BatchNorm and LayerNorm (decaying them only fights normalization).
NO_DECAY_NAMES = ("bias", "gamma", "beta")


def build_optimizer(optimizer_config,
                    steps=None,
                    batch_size=None,
                    finetune_from_step=None,
                    accumulate_steps=1):
  """Creates the optimizer; call inside `strategy.scope()`. Names are validated upstream.

  `steps` and `finetune_from_step` count optimizer updates (optimizer_steps);
  accumulate_steps > 1 updates once per that many apply_gradients calls (_Accumulating).

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
  optimizer_class = OPTIMIZER_CLASSES[optimizer_config.name]
  if accumulate_steps > 1:
    optimizer_class = _accumulating(optimizer_class)
    kwargs["accumulate_steps"] = accumulate_steps
  optimizer = optimizer_class(lr, **_own_kwargs(optimizer_config), **kwargs)
  if optimizer_config.weight_decay and not optimizer_config.weight_decay_everything:
    optimizer.exclude_from_weight_decay(var_names=list(NO_DECAY_NAMES))
  return optimizer
