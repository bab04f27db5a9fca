"""Checkpoints: how many are kept, reading them back whole, and where a run resumes.

Every trainer's checkpoints go through here: Keras' BackupAndRestore for `fit`
(PreemptibleBackup), a tf.train.CheckpointManager for the custom loop, the Estimator's
own saver. One function, resume_step, says how many training steps the newest readable
checkpoint of any of them holds.

Unreadable checkpoints: TensorFlow writes a checkpoint's files first and then points the
`checkpoint` state file at them, so a kill during a save leaves the previous one in
charge. A newest checkpoint that is damaged later (a truncated copy, a full disk) is
moved aside with a warning and the run resumes from the one before it; a read error that
does not say "damaged" (storage that hiccups or does not answer) sets nothing aside.

Keras-private workarounds (checked on tf-keras 2.15.1 and 2.21): PreemptibleBackup sets
BackupAndRestore's managers' `_max_to_keep` and its `_training_state._ckpt_saved_*`
variables; both are marked where they are used.
"""

import time

from absl import logging
import tensorflow as tf

from kmodels import faults, storage
from kmodels.errors import UserError, first_line

# Checkpoints kept for resuming: the newest, and one to fall back to if it is unreadable.
KEEP_CHECKPOINTS = 2
# BackupAndRestore keeps the chief's checkpoints in this subdirectory (Keras' layout).
BACKUP_CHIEF = "chief"
# The custom loop's best-validation-loss checkpoints (launch.evaluate --checkpoint=best).
BEST = "best"


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


class PreemptionRule:
  """The one rule for saving during training, for every trainer that saves mid-epoch.

  After each call of training steps: on SIGTERM, save that step and stop (raising
  faults.preempted); else, every `every_steps` steps, save. At each epoch's end the
  trainer saves anyway, then `epoch_ended` stops the run if SIGTERM arrived meanwhile.
  `save_step(epoch, done_in_epoch)` writes the checkpoint of the trainer's own kind.
  """

  def __init__(self, steps_per_epoch, sigterm, every_steps, start_step, save_step):
    self.steps_per_epoch, self.sigterm, self.save_step = steps_per_epoch, sigterm, save_step
    self.every = Every(every_steps, start_step)

  def after_steps(self, epoch, done_in_epoch):
    """After a call that ended with step `done_in_epoch` (1-based) of `epoch` (0-based)."""
    done = epoch * self.steps_per_epoch + done_in_epoch
    mid_epoch = done_in_epoch < self.steps_per_epoch  # the epoch's end saves anyway
    if self.sigterm.stop_now() and mid_epoch:
      self.save_step(epoch, done_in_epoch)
      raise faults.preempted(epoch, done_in_epoch - 1, self.steps_per_epoch)
    if self.every.crossed(done) and mid_epoch:
      self.save_step(epoch, done_in_epoch)
      log_step_checkpoint(done)

  def epoch_ended(self, epoch):
    """After the epoch's own checkpoint: stop if SIGTERM arrived at its last step or in
    validation."""
    self.every.crossed((epoch + 1) * self.steps_per_epoch)  # that save counts as one
    if self.sigterm.stop_now():
      raise faults.preempted(epoch, self.steps_per_epoch - 1, self.steps_per_epoch)


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
    self.rule = PreemptionRule(
        steps_per_epoch, sigterm, every_steps, start_step,
        lambda epoch, done_in_epoch: self._backup(epoch=epoch, batch=done_in_epoch - 1))

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
    self.rule.after_steps(self._current_epoch, batch + 1)

  def on_epoch_end(self, epoch, logs=None):
    # Saved as the epoch's last step, so the resume starts the next epoch.
    self._backup(epoch=epoch, batch=self.steps_per_epoch - 1)
    self.rule.epoch_ended(epoch)


def resume_step(directory, steps_per_epoch, repair=True):
  """Training steps done according to the newest readable checkpoint in `directory` (0 if
  none), whichever trainer wrote it."""
  path = newest_readable_checkpoint(directory, repair)
  step = (steps_done(path, steps_per_epoch) or 0) if path else 0
  log_resume(step)
  return step


# Every trainer logs this one line on a resume; tests and users read the step from it.
RESUME_LINE = "Resuming after training step %d; the input pipeline skips the batches " \
              "already trained on."


def log_resume(step):
  if step:
    logging.info(RESUME_LINE, step)


# Where each trainer's checkpoint records its progress.
_KERAS_BACKUP_KEYS = ("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE",
                      "ckpt_saved_batch/.ATTRIBUTES/VARIABLE_VALUE")
_CUSTOM_LOOP_STEP_KEY = "step/.ATTRIBUTES/VARIABLE_VALUE"
# Canned Estimators' name-based checkpoints, model_to_estimator's object-based ones (TF 2.x:
# checkpoint_format="checkpoint", keys relative to the model).
_ESTIMATOR_STEP_KEYS = ("global_step", "estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE")


def steps_done(path, steps_per_epoch=None):
  """The training steps the checkpoint at `path` was saved after (None if it records none).

  BackupAndRestore records (epoch, batch): a batch < 0 is a plain epoch-end save of older
  kmodels (then steps_per_epoch is needed). The custom loop and Estimators record a step.
  """
  reader = tf.train.load_checkpoint(path)
  names = reader.get_variable_to_shape_map()
  if all(key in names for key in _KERAS_BACKUP_KEYS):
    epoch, batch = (int(reader.get_tensor(key)) for key in _KERAS_BACKUP_KEYS)
    return (epoch + 1) * steps_per_epoch if batch < 0 else epoch * steps_per_epoch + batch + 1
  key = next((k for k in (_CUSTOM_LOOP_STEP_KEY, *_ESTIMATOR_STEP_KEYS) if k in names), None)
  return int(reader.get_tensor(key)) if key else None


def read_every_tensor(path):
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


def is_readable(path):
  """True, or False with the reason; raises a UserError if reading keeps failing otherwise."""
  for attempt in range(TRANSIENT_READ_ATTEMPTS):
    try:
      read_every_tensor(path)
      return True, None
    except _DAMAGED as e:
      return False, first_line(e) or repr(e)
    except Exception as e:  # pylint: disable=broad-except  (transient: retried, then raised)
      error = e
      logging.warning("Reading checkpoint %s failed (%s: %s); attempt %d of %d.", path,
                      type(e).__name__, first_line(e), attempt + 1, TRANSIENT_READ_ATTEMPTS)
      time.sleep(2**attempt)
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
  paths, timestamps = _listed(state)
  dropped = False
  while paths:
    readable, reason = is_readable(paths[-1])
    if readable:
      break
    bad = paths.pop()
    timestamps.pop()
    logging.warning(
        "Checkpoint %s is unreadable (%s); moved aside as %s.*.unreadable. "
        "Falling back to %s.", bad, reason, storage.basename(bad),
        paths[-1] if paths else "no checkpoint: training starts over")
    for file in storage.glob(bad + ".*"):
      storage.rename(file, file + ".unreadable")
    dropped = True
  if dropped:
    _rewrite_state(directory, paths, timestamps, state.last_preserved_timestamp)
  return paths[-1] if paths else None


def discard_after(directory, steps):
  """Moves aside (as *.discarded) the checkpoints in `directory` saved after `steps`
  training steps, and points the state file at the newest one left.

  For the Estimator trainers: their checkpoint saver runs before the hook that finds a
  NaN loss, so the step that diverged may have been saved already.
  """
  state = tf.train.get_checkpoint_state(directory)
  if state is None:
    return
  paths, timestamps = _listed(state)
  kept = [
      (path, stamp) for path, stamp in zip(paths, timestamps) if (steps_done(path) or 0) <= steps
  ]
  for path in set(paths) - {path for path, _ in kept}:
    logging.warning(
        "Checkpoint %s was saved after training diverged; moved aside as "
        "%s.*.discarded.", path, storage.basename(path))
    for file in storage.glob(path + ".*"):
      storage.rename(file, file + ".discarded")
  _rewrite_state(directory, [p for p, _ in kept], [t for _, t in kept],
                 state.last_preserved_timestamp)


def _listed(state):
  """A checkpoint state's (paths, save times), oldest first; 0.0 where none was recorded."""
  paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
  timestamps = list(state.all_model_checkpoint_timestamps) or [0.0] * len(paths)
  return paths, timestamps


def _rewrite_state(directory, paths, timestamps, last_preserved_timestamp):
  state_file = storage.join(directory, "checkpoint")
  if not paths:
    storage.remove(state_file)
    return
  names = [storage.basename(p) for p in paths]
  # Save times must be after last_preserved_timestamp, or the manager ignores them.
  floor = min(timestamps) - 1 if all(timestamps) else 0.0
  tf.compat.v1.train.update_checkpoint_state(
      directory,
      names[-1],
      all_model_checkpoint_paths=names,
      all_model_checkpoint_timestamps=[t or time.time() for t in timestamps],
      last_preserved_timestamp=min(last_preserved_timestamp, floor))
