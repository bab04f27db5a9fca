"""The epoch-end contract every Keras-side trainer runs, written once.

`epoch_contract(run)` is the list `fit` passes to model.fit and the custom loop drives
through a tf.keras.callbacks.CallbackList, in this order:

  StopOnNonFiniteLoss  first: a diverged step raises before anything saves its weights
  FirstStepCallback    time to the first training step (FirstStepTimer)
  EpochHistory         history.json, kept across restarts; "Resumed from ..." on a resume
  TensorBoard          epoch scalars under WORKDIR/tensorboard/{train,validation}, and
                       with train.profile_steps a profile trace of those steps
  StepScalars          with train.checkpoint_every_steps: the running train metrics at
                       that cadence under WORKDIR/tensorboard/train_steps
  Progress             the chief's progress: a bar on a terminal, else a line every
                       train.log_every_seconds (also WORKDIR/tensorboard/train_progress)
  EpochLog             one line per epoch: its metrics, images/s and seconds

Each trainer then adds what only it needs: fit its PreemptibleBackup (resume and SIGTERM,
last) and, when fine-tuning, FreezeBackbone (first), the custom loop its checkpoint
manager. The Estimator trainers run the contract without TensorBoard (EpochScalars
instead) and feed Progress and FirstStepTimer each step through a session hook.
"""

import sys
import time
from typing import List

from absl import logging
import tensorflow as tf

from kmodels import checkpoints, cpus, distribute, faults, progress, reporting, storage


class EpochHistory(tf.keras.callbacks.Callback):
  """Keeps per-epoch logs in history.json, so curves survive a crash and a resume.

  Keras' own History only knows the epochs of the current process; after a resume the
  earlier epochs would be missing from the plot and from metrics.json.
  """

  def __init__(self, path, images_per_epoch):
    """`path`: where to keep the history; None on workers that write nothing."""
    super().__init__()
    self.path = path
    self.images_per_epoch = images_per_epoch
    self.epochs = {}
    self.first_epoch = None
    self._start = None

  def on_train_begin(self, logs=None):
    if self.path:
      self.epochs = {e["epoch"]: e for e in reporting.read_json(self.path, [])}

  def on_epoch_begin(self, epoch, logs=None):
    if self.first_epoch is None:
      self.first_epoch = epoch
      if epoch:
        logging.info("Resumed from the checkpoint of epoch %d; continuing at epoch %d.", epoch,
                     epoch + 1)
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    seconds = time.perf_counter() - self._start
    record = {k: float(v) for k, v in (logs or {}).items()}
    record.update(
        epoch=epoch + 1,
        seconds=seconds,
        images=self.images_per_epoch,
        # The first epoch of a process includes tracing and compilation.
        includes_compile=epoch == self.first_epoch,
        # Peak so far: flat across epochs unless something grows (a cache that
        # does not fit, a leak).
        peak_rss_mb=cpus.peak_rss_mb())
    self.epochs[epoch + 1] = record
    if self.path:
      reporting.write_json(self.path, self.history)

  @property
  def history(self):
    return [self.epochs[e] for e in sorted(self.epochs)]


def steady_images_per_second(history):
  """Steady-state training throughput: epochs that paid no compilation, if there are any."""
  steady = [h for h in history if not h["includes_compile"]] or history
  seconds = sum(h["seconds"] for h in steady)
  return sum(h["images"] for h in steady) / seconds if seconds else 0.0


class FirstStepTimer:
  """Seconds from the start of a run to the end of its first training step."""

  def __init__(self):
    self.start = time.perf_counter()
    self.seconds = None
    self.unix_time = None  # when it happened, for tools timing from their own start

  def step_done(self):
    if self.seconds is None:
      self.seconds = time.perf_counter() - self.start
      self.unix_time = time.time()


class FirstStepCallback(tf.keras.callbacks.Callback):
  """Tells a FirstStepTimer when the first training step (or call of several) finished."""

  def __init__(self, timer):
    super().__init__()
    self.timer = timer

  def on_train_batch_end(self, batch, logs=None):
    self.timer.step_done()


class EpochLog(tf.keras.callbacks.Callback):
  """One log line per epoch: the logs, and images/s from the EpochHistory before it."""

  def __init__(self, history, epochs):
    super().__init__()
    self.history, self.epochs = history, epochs

  def on_epoch_end(self, epoch, logs=None):
    record = self.history.epochs[epoch + 1]
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items())
    logging.info("Epoch %d/%d: %s; %.0f images/s (%.1f s with evaluation).", epoch + 1, self.epochs,
                 metrics, record["images"] / record["seconds"], record["seconds"])


class Progress(tf.keras.callbacks.Callback):
  """How far an epoch is, where its output is read (every trainer, the chief only).

  On a terminal: Keras' progress bar. Elsewhere (a cloud job's log, a file: an epoch can
  be an hour of silence there) one line every `every_seconds` and at the epoch's last
  step, with the step of the epoch, the running loss and accuracy, images/s since the
  previous line and the epoch's remaining time; the same numbers go to TensorBoard
  (`train_progress`, by global step), so the two agree. A resumed epoch counts from its
  resume point: its first step seen is where its clock starts.
  """

  def __init__(self,
               epochs,
               steps_per_epoch,
               global_batch_size,
               every_seconds,
               tensorboard_dir=None,
               terminal=None,
               clock=time.monotonic):
    super().__init__()
    self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
    self.global_batch_size, self.every_seconds = global_batch_size, every_seconds
    self.tensorboard_dir, self.clock = tensorboard_dir, clock
    self.terminal = sys.stdout.isatty() if terminal is None else terminal
    self._epoch, self._bar, self._bar_step, self._writer = 0, None, 0, None
    self._pending = []  # (global step, {name: value}) not yet written to TensorBoard
    self._first = self._last = None  # (step, time) of the epoch's first and previous line

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch, self._first, self._last = epoch, None, None
    self._epoch_start = self.clock()
    if self.terminal:
      print(f"Epoch {epoch + 1}/{self.epochs}", flush=True)
      self._bar = tf.keras.utils.Progbar(self.steps_per_epoch,
                                         stateful_metrics=["loss", "accuracy"])

  def on_train_batch_end(self, batch, logs=None):
    step, now, logs = batch + 1, self.clock(), logs or {}
    if self.terminal:
      self._bar.update(step, [(k, float(v)) for k, v in logs.items()], finalize=False)
      self._bar_step = step
      return
    if self._first is None:  # the first call of the epoch (and after a resume) traces
      self._first = self._last = (step, now)
      if step < self.steps_per_epoch:
        return
      self._last = (step - 1, self._epoch_start)  # a resumed epoch's only step
    if step >= self.steps_per_epoch or now - self._last[1] >= self.every_seconds:
      self._line(step, now, logs)

  def _line(self, step, now, logs):
    (last_step, last_time), (first_step, first_time) = self._last, self._first
    images_per_second = ((step - last_step) * self.global_batch_size / max(now - last_time, 1e-9))
    seconds_per_step = (now - first_time) / max(step - first_step, 1)
    remaining = (self.steps_per_epoch - step) * seconds_per_step
    metrics = ", ".join(f"{name} {float(value):.4f}" for name, value in logs.items())
    logging.info("Epoch %d/%d, step %d/%d: %s; %.0f images/s; epoch ends in %s.", self._epoch + 1,
                 self.epochs, step, self.steps_per_epoch, metrics, images_per_second,
                 progress.duration(remaining))
    self._last = (step, now)
    self._scalars(self._epoch * self.steps_per_epoch + step, logs, images_per_second)

  def _scalars(self, global_step, logs, images_per_second):
    if not self.tensorboard_dir:
      return
    self._pending.append((global_step, {
        **{
            k: float(v) for k, v in logs.items()
        }, "images_per_second": images_per_second
    }))
    # Inside an Estimator's training graph (its session hook) nothing can be written:
    # the points wait for the epoch's end, which runs eagerly.
    if tf.executing_eagerly():
      self._write_pending()

  def _write_pending(self):
    if not self._pending:
      return
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(self.tensorboard_dir)
    for global_step, values in self._pending:
      with self._writer.as_default(step=global_step):
        for name, value in values.items():
          tf.summary.scalar(name, value)
    self._writer.flush()
    self._pending = []

  def on_epoch_end(self, epoch, logs=None):
    if self.terminal and self._bar is not None:
      self._bar.update(self._bar_step, finalize=True)  # the bar's line ends here
    self._write_pending()

  def on_train_end(self, logs=None):
    self._write_pending()
    if self._writer is not None:
      self._writer.close()
      self._writer = None


class EpochScalars(tf.keras.callbacks.Callback):
  """Each epoch's logs as TensorBoard scalars named as Keras' TensorBoard names them
  (`train/epoch_loss`, `validation/epoch_accuracy`, ...), for trainers without a Keras
  model for that callback to watch (the Estimators)."""

  def __init__(self, directory):
    super().__init__()
    self.directory, self._writers = directory, {}

  def on_epoch_end(self, epoch, logs=None):
    for name, value in (logs or {}).items():
      split, name = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
      if split not in self._writers:
        self._writers[split] = tf.summary.create_file_writer(storage.join(self.directory, split))
      with self._writers[split].as_default(step=epoch):
        tf.summary.scalar(f"epoch_{name}", float(value))
      self._writers[split].flush()

  def on_train_end(self, logs=None):
    for writer in self._writers.values():
      writer.close()
    self._writers = {}


class StepScalars(tf.keras.callbacks.Callback):
  """The running train metrics every `every` steps, as TensorBoard scalars by global step.

  Keras' TensorBoard(update_freq=N) counts fit's own step counter, which the custom loop
  does not advance; this counts epochs x steps_per_epoch + batch for both trainers.
  """

  def __init__(self, directory, every, steps_per_epoch):
    super().__init__()
    self.directory, self.steps_per_epoch = directory, steps_per_epoch
    self.every = checkpoints.Every(every)
    self._epoch, self._writer = 0, None

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    step = self._epoch * self.steps_per_epoch + batch + 1
    if not self.every.crossed(step) or not logs:
      return
    if self._writer is None:
      self._writer = tf.summary.create_file_writer(self.directory)
    with self._writer.as_default(step=step):
      for name, value in logs.items():
        tf.summary.scalar(name, float(value))
    self._writer.flush()


class FreezeBackbone(tf.keras.callbacks.Callback):
  """Trains only the head for the first `epochs` epochs, then the whole model (fit only).

  A frozen Keras layer also runs its BatchNorm in inference mode (trainable=False does
  both, as Keras' transfer-learning guide relies on), so the backbone's statistics stay
  those of its weights file. The learning rate's drop at the thaw is the optimizer's
  (optimizers.FinetuneSchedule), so a resume in either phase keeps the same rates.
  """

  def __init__(self, backbone, epochs):
    super().__init__()
    self.backbone, self.epochs = backbone, epochs

  def on_epoch_begin(self, epoch, logs=None):
    frozen = epoch < self.epochs
    if self.backbone.trainable != frozen:
      return
    self.backbone.trainable = not frozen
    # fit traced its step for the old trainable set; it calls model.train_function anew
    # every step, so a fresh one trains the new set.
    self.model.train_function = self.model.make_train_function(force=True)
    logging.info(
        "Epoch %d: %s.", epoch + 1,
        (f"backbone frozen (BatchNorm in inference mode), training the head only until "
         f"epoch {self.epochs}" if frozen else "backbone thawed, training the whole model"))


def epoch_contract(run) -> List[tf.keras.callbacks.Callback]:
  """The callbacks every Keras-side trainer calls, in order (see the module docstring)."""
  every = run.config.train.checkpoint_every_steps
  step_scalars = ([
      StepScalars(storage.join(run.workdir.tensorboard, "train_steps"), every, run.steps_per_epoch)
  ] if every and run.history.path else [])  # the chief only
  train = run.config.train
  chief_progress = ([
      Progress(train.epochs, run.steps_per_epoch, train.batch_size, train.log_every_seconds,
               storage.join(run.workdir.tensorboard, "train_progress"))
  ] if distribute.is_chief(run.strategy) else [])
  return [
      faults.StopOnNonFiniteLoss(run.config),
      FirstStepCallback(run.timer),
      run.history,
      # Under multi_worker, Keras sends a non-chief worker's events to a temporary dir.
      tf.keras.callbacks.TensorBoard(run.workdir.tensorboard,
                                     update_freq="epoch",
                                     profile_batch=train.profile_steps or 0,
                                     write_graph=False),
      *step_scalars,
      *chief_progress,
      EpochLog(run.history, train.epochs),
  ]
