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

Unreadable checkpoints: TensorFlow writes a checkpoint's files first and then points the
`checkpoint` state file at them, so a kill during a save leaves the previous one in
charge. A newest checkpoint that is damaged later (a truncated copy, a full disk) is
moved aside with a warning and the run resumes from the one before it; a read error that
does not say "damaged" (storage that hiccups or does not answer) sets nothing aside.
"""

import contextlib
import errno
import math
import signal
import threading
import time

from absl import logging
import tensorflow as tf

from kmodels import distribute, storage
from kmodels.errors import Preempted, TrainingDiverged, UserError, first_line

# Checkpoints kept for resuming: the newest, and one to fall back to if it is unreadable.
KEEP_CHECKPOINTS = 2


def diverged(loss, epoch, step, config):
  """The TrainingDiverged error for a non-finite `loss` at 0-based `epoch` and `step`."""
  causes = [f"a learning rate too high for this model (train.optimizer.learning_rate="
            f"{config.train.optimizer.learning_rate}; try a tenth of it)"]
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
    self._any_worker = (_any_replica_true(strategy) if distribute.is_multi_worker(strategy)
                        else None)

  def _handle(self, signum, frame):
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
  previous = signal.signal(signal.SIGTERM, flag._handle)
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


class Every:
  """Whether a count of training steps crossed a multiple of `n` since it was last asked.

  Steps arrive in calls of train.steps_per_execution, so `done` may jump past a multiple;
  `n` None or 0: never.
  """

  def __init__(self, n, start=0):
    self.n, self.last = n, start

  def crossed(self, done):
    due = bool(self.n) and done // self.n > self.last // self.n
    self.last = done
    return due


def log_step_checkpoint(steps_done):
  logging.info("Checkpointed step %d (train.checkpoint_every_steps).", steps_done)


class PreemptibleBackup(tf.keras.callbacks.BackupAndRestore):
  """BackupAndRestore that saves at each epoch's end, every `every_steps` steps, and, after
  SIGTERM, at once.

  Saving by step (not by epoch) makes Keras resume a run mid-epoch, at the step after
  the checkpoint. Put it last among the callbacks: the epoch's checkpoint is written
  after validation and after the history has recorded the epoch, so a kill in between
  never leaves a checkpoint ahead of history.json.
  """

  def __init__(self, directory, steps_per_epoch, sigterm, every_steps=None, start_step=0):
    # delete_checkpoint=False: re-running a finished command restores the final epoch and
    # only re-evaluates, instead of silently training from scratch a second time.
    super().__init__(directory, save_freq=steps_per_epoch, delete_checkpoint=False)
    self.steps_per_epoch = steps_per_epoch
    self.sigterm = sigterm
    self.every = Every(every_steps, start_step)

  def on_train_begin(self, logs=None):
    super().on_train_begin(logs)
    # Keras keeps one checkpoint; keep one more to fall back to. (No public argument:
    # `_max_to_keep` is the attribute CheckpointManager reads when it deletes old ones.)
    state = self._training_state
    for manager in (state.read_checkpoint_manager, state.write_checkpoint_manager):
      manager._max_to_keep = KEEP_CHECKPOINTS  # pylint: disable=protected-access

  def _backup(self, epoch, batch=0):
    # Keras records the batch in on_train_batch_begin: with steps_per_execution > 1 that
    # is the first step of the call, while the weights hold its last. Saved as it was,
    # a resume would train the call's other steps again.
    self._training_state._ckpt_saved_epoch.assign(epoch)  # pylint: disable=protected-access
    self._training_state._ckpt_saved_batch.assign(batch)  # pylint: disable=protected-access
    super()._backup(epoch, batch)

  def on_train_batch_end(self, batch, logs=None):
    # Every worker asks at every step, the last included (see SigtermFlag).
    mid_epoch = batch < self.steps_per_epoch - 1  # the epoch's end saves in on_epoch_end
    if self.sigterm.stop_now() and mid_epoch:
      self._backup(epoch=self._current_epoch, batch=batch)
      raise preempted(self._current_epoch, batch, self.steps_per_epoch)
    done = self._current_epoch * self.steps_per_epoch + batch + 1
    if self.every.crossed(done) and mid_epoch:
      self._backup(epoch=self._current_epoch, batch=batch)
      log_step_checkpoint(done)

  def on_epoch_end(self, epoch, logs=None):
    # Saved as the epoch's last step, so the resume starts the next epoch.
    self._backup(epoch=epoch, batch=self.steps_per_epoch - 1)
    if self.sigterm.stop_now():  # arrived at the last step or during validation
      raise preempted(epoch, self.steps_per_epoch - 1, self.steps_per_epoch)


def backup_resume_step(directory, steps_per_epoch, repair=True):
  """Training steps done according to the newest readable BackupAndRestore checkpoint."""
  path = newest_readable_checkpoint(storage.join(directory, "chief"), repair)
  if not path:
    return 0
  reader = tf.train.load_checkpoint(path)
  epoch, step = (int(reader.get_tensor(f"{name}/.ATTRIBUTES/VARIABLE_VALUE"))
                 for name in ("ckpt_saved_epoch", "ckpt_saved_batch"))
  if step < 0:  # saved by a plain BackupAndRestore(save_freq="epoch"), older kmodels
    return (epoch + 1) * steps_per_epoch
  return epoch * steps_per_epoch + step + 1


def _read_every_tensor(path):
  reader = tf.train.load_checkpoint(path)
  for name in reader.get_variable_to_shape_map():
    reader.get_tensor(name)


# What a damaged checkpoint raises when read back: TF's reader gives DataLossError or
# NotFoundError (a missing data file), or a bare IndexError ("Read less bytes than
# requested") for a truncated one. Anything else (an I/O hiccup, storage that does not
# answer) says nothing about the checkpoint, which is then left where it is.
_DAMAGED = (tf.errors.DataLossError, tf.errors.NotFoundError, tf.errors.InvalidArgumentError,
            tf.errors.OutOfRangeError, IndexError, ValueError)
TRANSIENT_READ_ATTEMPTS = 3


def _is_readable(path):
  """True, or False with the reason; raises a UserError if reading keeps failing otherwise."""
  for attempt in range(TRANSIENT_READ_ATTEMPTS):
    try:
      _read_every_tensor(path)
      return True, None
    except _DAMAGED as e:
      return False, first_line(e) or repr(e)
    except Exception as e:  # pylint: disable=broad-except  (transient: retried, then raised)
      error = e
      logging.warning("Reading checkpoint %s failed (%s: %s); attempt %d of %d.", path,
                      type(e).__name__, first_line(e),
                      attempt + 1, TRANSIENT_READ_ATTEMPTS)
      time.sleep(2 ** attempt)
  raise UserError(f"Could not read checkpoint {path}: {type(error).__name__}: {error}. This "
                  "does not look like a damaged checkpoint (nothing was set aside): check "
                  "that its storage is reachable and run the same command again.") from error


def newest_readable_checkpoint(directory, repair=True):
  """The newest checkpoint in `directory` that reads back whole, or None.

  With `repair`, unreadable newer ones are moved aside (logged with the reason) and the
  `checkpoint` state file is rewritten as tf.train.CheckpointManager writes it (relative
  paths and their save times), so the next manager adopts the survivor, keeps it as a
  fallback and a moved or copied workdir still resumes. Multi-worker jobs pass
  repair=False: every worker reads the chief's directory, and only one may change it.
  """
  if not repair:
    return tf.train.latest_checkpoint(directory)
  state_file = storage.join(directory, "checkpoint")
  if not storage.exists(state_file):  # raises if the storage does not answer
    return None
  state = tf.train.get_checkpoint_state(directory)
  if state is None:  # TensorFlow logs read errors here and returns None
    raise UserError(f"Could not read {state_file}: its storage did not answer or it is "
                    "damaged (see the warning above). Nothing was changed; check the "
                    "storage and run the same command again.")
  paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
  timestamps = list(state.all_model_checkpoint_timestamps) or [0.0] * len(paths)
  dropped = False
  while paths:
    readable, reason = _is_readable(paths[-1])
    if readable:
      break
    bad = paths.pop()
    timestamps.pop()
    logging.warning("Checkpoint %s is unreadable (%s); moved aside as %s.*.unreadable. "
                    "Falling back to %s.", bad, reason, storage.basename(bad),
                    paths[-1] if paths else "no checkpoint: training starts over")
    for file in storage.glob(bad + ".*"):
      storage.rename(file, file + ".unreadable")
    dropped = True
  if dropped:
    _rewrite_state(directory, paths, timestamps, state.last_preserved_timestamp)
  return paths[-1] if paths else None


def _rewrite_state(directory, paths, timestamps, last_preserved_timestamp):
  state_file = storage.join(directory, "checkpoint")
  if not paths:
    storage.remove(state_file)
    return
  names = [storage.basename(p) for p in paths]
  # Save times must be after last_preserved_timestamp, or the manager ignores them.
  floor = min(timestamps) - 1 if all(timestamps) else 0.0
  tf.compat.v1.train.update_checkpoint_state(
      directory, names[-1], all_model_checkpoint_paths=names,
      all_model_checkpoint_timestamps=[t or time.time() for t in timestamps],
      last_preserved_timestamp=min(last_preserved_timestamp, floor))


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
