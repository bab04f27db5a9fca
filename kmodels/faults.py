"""What a run does when training is interrupted or goes wrong.

Non-finite loss: the run stops at the first non-finite training loss, before the epoch's
checkpoint is written, so the newest checkpoint holds the last good weights and
history.json the epochs completed; the error names the epoch, the step and the causes.

Preemption: SIGTERM (what a preempted VM, Kubernetes or a batch scheduler sends before
killing) is remembered instead of ending the process; after the current step the run
saves a checkpoint of that step and stops with exit status 143. The same command resumes
at the next step, and the input pipeline skips the batches already trained on. In a
multi-worker job the workers agree after every step whether any of them got SIGTERM, and
all stop at that step together.

Disk full: one message saying that completed checkpoints are intact. Checkpoints
themselves (keeping, reading back, resuming): kmodels/checkpoints.py.
"""

import contextlib
import errno
import math
import signal
import threading

from absl import logging
import tensorflow as tf

from kmodels import distribute
from kmodels.errors import Preempted, TrainingDiverged, UserError


def diverged(loss, epoch, step, config):
  """The TrainingDiverged error for a non-finite `loss` at 0-based `epoch` and `step`."""
  causes = [
      f"a learning rate too high for this model (train.optimizer.learning_rate="
      f"{config.train.optimizer.learning_rate}; try a tenth of it)"
  ]
  if config.precision == "mixed_float16":
    causes.append("float16 overflow in the forward pass (try precision=mixed_bfloat16, "
                  "whose range is float32's)")
  causes.append("NaN or infinite values in the input data")
  return TrainingDiverged(
      f"Training diverged: the loss became {loss} at epoch {epoch + 1}, step {step + 1}. "
      f"Likely causes: {'; '.join(causes)}. Nothing of that epoch was saved: the newest "
      "checkpoint holds the last good weights and a rerun resumes from it (change the "
      "config first, and use a new --workdir if you change the model).")


def check_finite(loss, epoch, step, config):
  loss = float(loss)
  if not math.isfinite(loss):
    raise diverged(loss, epoch, step, config)


class StopOnNonFiniteLoss(tf.keras.callbacks.Callback):
  """Raises TrainingDiverged at the first step whose running loss is NaN or infinite.

  Keras' TerminateOnNaN only sets stop_training: fit then still ends the epoch, and
  BackupAndRestore would save the broken weights as the newest checkpoint.
  """

  def __init__(self, config):
    super().__init__()
    self.config = config
    self._epoch = 0

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    if logs and "loss" in logs:
      check_finite(logs["loss"], self._epoch, batch, self.config)


class SigtermFlag:
  """Set by SIGTERM while installed; training loops ask `stop_now()` after each step.

  In a multi-worker job SIGTERM may reach one worker (one preempted VM) or all of them
  at different steps, while every worker must take part in each step and in each
  checkpoint. There `stop_now` is one small all-reduce of the workers' flags, so they
  all stop at the same step if any of them was told to; every worker must call it at the
  same points of the loop.
  """

  def __init__(self, strategy):
    self.received = False
    self._any_worker = (_any_replica_true(strategy)
                        if distribute.is_multi_worker(strategy) else None)

  def handle_sigterm(self, signum, frame):
    del signum, frame
    self.received = True
    logging.warning("SIGTERM received: saving a checkpoint after the current step.")

  def stop_now(self):
    """Whether this process, or under multi_worker any worker, has received SIGTERM."""
    if self._any_worker is None:
      return self.received
    return bool(self._any_worker(tf.constant(self.received)))


def _any_replica_true(strategy):

  @tf.function
  def any_true(flag):
    per_replica = strategy.run(lambda f: tf.cast(f, tf.int32), args=(flag,))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None) > 0

  return any_true


@contextlib.contextmanager
def sigterm_flag(strategy):
  """A SigtermFlag installed as the SIGTERM handler for the block.

  Outside the main thread, where Python can't install handlers, the flag is never set.
  """
  flag = SigtermFlag(strategy)
  if threading.current_thread() is not threading.main_thread():
    yield flag
    return
  previous = signal.signal(signal.SIGTERM, flag.handle_sigterm)
  try:
    yield flag
  finally:
    signal.signal(signal.SIGTERM, previous)


def preempted(epoch, step, steps_per_epoch):
  """The Preempted error after a checkpoint at 0-based `epoch` and `step`."""
  done = epoch * steps_per_epoch + step + 1
  return Preempted(f"Stopped by SIGTERM after epoch {epoch + 1}, step {step + 1} "
                   f"({done} steps in all); that step is checkpointed. Run the same command "
                   "again to resume from it.")


def is_disk_full(error):
  """Whether `error` (an OSError or a TensorFlow error) says the disk is full."""
  if isinstance(error, OSError) and error.errno == errno.ENOSPC:
    return True
  return isinstance(error, tf.errors.OpError) and "No space left on device" in str(error)


def disk_full(root):
  return UserError(
      f"The disk holding {root} is full (no space left on device). Checkpoints completed "
      "before are intact; one that failed mid-write is not used. Free some space and run "
      "the same command again to resume.")
