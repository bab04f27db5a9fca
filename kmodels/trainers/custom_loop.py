"""The `custom_loop` trainer (the CIFAR training-loop tutorial): a GradientTape train step under
`strategy.run`.

What it does by hand that `model.fit` does for you, and why:
- The loss is averaged over the *global* batch (`tf.nn.compute_average_loss`): replicas'
  gradients are summed, so each must divide by the global batch for the sum to be the
  single-device gradient. Regularization losses are divided by the replica count too.
- Under mixed_float16 the loss is scaled before the backward pass and the gradients
  unscaled after (LossScaleOptimizer, set by compile), so small float16 gradients don't
  flush to zero; steps with overflowing gradients are skipped and the scale lowered.
- Metrics are Keras metric objects made in the strategy scope: their variables are summed
  over replicas when read, so the numbers cover the global batch.
- `xla: True` compiles the forward and backward pass with XLA; the gradient all-reduce
  and the optimizer update run outside it, where cross-replica calls are allowed.
- tf.train.CheckpointManager over model + optimizer + epoch: checkpoints/ keeps the two
  newest (resume after a crash), checkpoints/best/ the one with the lowest validation loss.
"""

import math

from absl import logging
import tensorflow as tf

from kmodels import checkpoints as checkpoints_lib
from kmodels import distribute, faults, models, optimizers, storage
from kmodels.data import mixing


class _Metrics:
  """Train and validation loss/accuracy, created inside the strategy scope; with
  `mixed_targets` (MixUp, CutMix) training accuracy counts each image's largest share."""

  def __init__(self, mixed_targets=False):
    self.loss = tf.keras.metrics.Mean("loss")
    self.accuracy = models.accuracy_metric("accuracy", mixed_targets)
    self.val_loss = tf.keras.metrics.Mean("val_loss")
    self.val_accuracy = tf.keras.metrics.SparseCategoricalAccuracy("val_accuracy")

  def all(self):
    return [self.loss, self.accuracy, self.val_loss, self.val_accuracy]

  def results(self):
    return {m.name: float(m.result()) for m in self.all()}

  def reset(self):
    for metric in self.all():
      metric.reset_state()


def _uses_loss_scaling(optimizer):
  return isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer)


def make_train_step(model, optimizer, loss_fn, global_batch_size, metrics, jit_compile):
  """The per-replica train step: forward, backward, update, metrics."""
  scaling = _uses_loss_scaling(optimizer)

  def compute_gradients(images, labels):
    with tf.GradientTape() as tape:
      outputs = model(images, training=True)
      per_example_loss = loss_fn(labels, outputs)
      loss = tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)
      if model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
      scaled_loss = optimizer.get_scaled_loss(loss) if scaling else loss
    gradients = tape.gradient(scaled_loss, model.trainable_variables)
    if scaling:
      gradients = optimizer.get_unscaled_gradients(gradients)
    return per_example_loss, outputs, gradients

  if jit_compile:
    compute_gradients = tf.function(compute_gradients, jit_compile=True)

  def train_step(batch):
    images, labels = batch
    with tf.device(_replica_device()):
      per_example_loss, outputs, gradients = compute_gradients(images, labels)
    optimizer.apply_gradients(zip(gradients, model.trainable_variables))
    metrics.loss.update_state(per_example_loss)
    metrics.accuracy.update_state(labels, outputs)

  return train_step


def _per_example_loss(config):
  """The run's loss per example (averaged over the global batch by the step itself)."""
  return models.loss(config.model.name,
                     reduction=tf.keras.losses.Reduction.NONE,
                     label_smoothing=config.train.label_smoothing,
                     mixed_targets=mixing.mixes(config.dataset.augment))


def make_train_steps(model, strategy, config, loss_fn=None):
  """`train_steps(iterator, steps)`: a tf.function running `steps` distributed train steps.

  Returns it with the metrics it updates. `model` must be compiled (its optimizer is used);
  `loss_fn`: the run's per-example loss, if the caller has built it already.
  """
  optimizer = model.optimizer  # from compile: a LossScaleOptimizer under mixed_float16
  loss_fn = loss_fn or _per_example_loss(config)
  with strategy.scope():
    metrics = _Metrics(mixing.mixes(config.dataset.augment))
    optimizers.build_variables(optimizer, model.trainable_variables)
  train_step = make_train_step(model, optimizer, loss_fn, config.train.batch_size, metrics,
                               config.xla)

  @tf.function
  def train_steps(iterator, steps):
    for _ in tf.range(steps):
      strategy.run(train_step, args=(next(iterator),))

  return train_steps, metrics


def _replica_device():
  """This replica's device, so an XLA cluster runs where the replica's variables live."""
  context = tf.distribute.get_replica_context()
  strategy = context.strategy
  if context.num_replicas_in_sync == 1 or isinstance(strategy, tf.distribute.TPUStrategy):
    return None  # TensorFlow's own placement is right
  devices = strategy.extended.worker_devices  # this worker's; replica ids are global
  if len(devices) == 1:
    return None
  replica = tf.get_static_value(context.replica_id_in_sync_group)
  return devices[replica % len(devices)]


def make_eval_step(model, loss_fn, metrics):

  def eval_step(batch):
    images, labels = batch
    outputs = model(images, training=False)
    metrics.val_loss.update_state(loss_fn(labels, outputs))
    metrics.val_accuracy.update_state(labels, outputs)

  return eval_step


class _Checkpoints:
  """Latest (for resuming) and best (lowest validation loss) checkpoints of a run.

  Latest checkpoints are numbered by training steps done: an epoch end and a SIGTERM
  mid-epoch both write one.
  """

  def __init__(self, model, optimizer, directory):
    self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)  # epochs completed
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False)  # training steps completed
    self.best_val_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False)
    self.checkpoint = tf.train.Checkpoint(model=model,
                                          optimizer=optimizer,
                                          epoch=self.epoch,
                                          step=self.step,
                                          best_val_loss=self.best_val_loss)
    self.latest = tf.train.CheckpointManager(self.checkpoint, directory,
                                             checkpoints_lib.KEEP_CHECKPOINTS)
    self.best = tf.train.CheckpointManager(self.checkpoint,
                                           storage.join(directory, checkpoints_lib.BEST),
                                           max_to_keep=1,
                                           checkpoint_name=checkpoints_lib.BEST)

  def restore_latest(self, directory, repair):
    """Restores the newest readable checkpoint in `directory` (the chief's): steps done."""
    path = checkpoints_lib.newest_readable_checkpoint(directory, repair)
    if path:
      self.checkpoint.restore(path).assert_existing_objects_matched()
      logging.info("Restored %s (epoch %d, step %d, best val_loss %.4f).", path, int(self.epoch),
                   int(self.step), float(self.best_val_loss))
    return int(self.step)

  def save(self, epochs_done, steps_done, val_loss):
    self.epoch.assign(epochs_done)
    if val_loss < float(self.best_val_loss):
      self.best_val_loss.assign(val_loss)
      self.best.save(checkpoint_number=epochs_done)
    self.save_step(steps_done)

  def save_step(self, steps_done):
    self.step.assign(steps_done)
    self.latest.save(checkpoint_number=steps_done)


class _SaveCheckpoints(tf.keras.callbacks.Callback):
  """Each epoch end: the latest checkpoint, and the best one by validation loss."""

  def __init__(self, checkpoints, steps_per_epoch):
    super().__init__()
    self.checkpoints, self.steps_per_epoch = checkpoints, steps_per_epoch

  def on_epoch_end(self, epoch, logs=None):
    self.checkpoints.save(epoch + 1, (epoch + 1) * self.steps_per_epoch, logs["val_loss"])


def train_steps_of_epoch(train_steps, iterator, run, first_step, metrics, callbacks, stop):
  """Runs the steps of one epoch from `first_step` on; `stop(done)` may end the run early.

  After each call (train.steps_per_execution steps) the callbacks see the running loss at
  on_train_batch_end, as under model.fit: a NaN raises there, before any checkpoint.
  """
  done, steps_per_call = first_step, run.config.train.steps_per_execution
  while done < run.steps_per_epoch:
    steps = min(steps_per_call, run.steps_per_epoch - done)
    callbacks.on_train_batch_begin(done)
    train_steps(iterator, tf.constant(steps))
    done += steps
    callbacks.on_train_batch_end(done - 1, {
        "loss": float(metrics.loss.result()),
        "accuracy": float(metrics.accuracy.result())
    })
    if done < run.steps_per_epoch:
      stop(done)


def make_evaluate(model, loss_fn, metrics, strategy):
  """evaluate(distributed dataset): one pass, into metrics' val_loss and val_accuracy."""
  eval_step = make_eval_step(model, loss_fn, metrics)

  @tf.function
  def evaluate(dataset):
    for batch in dataset:
      strategy.run(eval_step, args=(batch,))

  return evaluate


def train(run):
  """Trains run.model for run.config.train.epochs, resuming from the latest checkpoint.

  The outer loop is fit's: run.callbacks (the epoch-end contract) through a CallbackList,
  plus this trainer's checkpoints.
  """
  config, model, strategy = run.config, run.model, run.strategy
  optimizer = model.optimizer  # from compile: a LossScaleOptimizer under mixed_float16
  loss_fn = _per_example_loss(config)
  train_steps, metrics = make_train_steps(model, strategy, config, loss_fn)
  evaluate = make_evaluate(model, loss_fn, metrics, strategy)
  eval_dataset = strategy.experimental_distribute_dataset(run.datasets.eval)
  steps_per_epoch = run.steps_per_epoch
  with distribute.writable_path(run.workdir.checkpoints, strategy) as checkpoint_dir, \
       faults.sigterm_flag(strategy) as sigterm:
    checkpoints = _Checkpoints(model, optimizer, checkpoint_dir)
    steps_done = checkpoints.restore_latest(run.workdir.checkpoints,
                                            repair=not distribute.is_multi_worker(strategy))
    checkpoints_lib.log_resume(steps_done)
    # The input pipeline skips the batches already trained on: a resumed run sees the
    # same data as an uninterrupted one.
    train_iterator = iter(run.datasets.distributed_train(strategy, steps_done))
    first_epoch, first_step = divmod(steps_done, steps_per_epoch)
    callbacks = tf.keras.callbacks.CallbackList(
        [*run.callbacks, _SaveCheckpoints(checkpoints, steps_per_epoch)], model=model)

    rule = checkpoints_lib.PreemptionRule(
        steps_per_epoch, sigterm, config.train.checkpoint_every_steps, steps_done,
        lambda epoch, done: checkpoints.save_step(epoch * steps_per_epoch + done))

    callbacks.on_train_begin()
    for epoch in range(first_epoch, config.train.epochs):
      callbacks.on_epoch_begin(epoch)
      metrics.reset()
      train_steps_of_epoch(train_steps,
                           train_iterator,
                           run,
                           first_step if epoch == first_epoch else 0,
                           metrics,
                           callbacks,
                           lambda done, epoch=epoch: rule.after_steps(epoch, done))
      evaluate(eval_dataset)
      callbacks.on_epoch_end(epoch, metrics.results())  # saves the epoch (_SaveCheckpoints)
      rule.epoch_ended(epoch)
    # As fit does at its end: with ema_momentum the weights become their moving average
    # (after the last checkpoint, which keeps both for a resume).
    optimizer.finalize_variable_values(model.trainable_variables)
    callbacks.on_train_end()
