"""How far long work is, said in the log: one cadence and one wording for all of it.

Cloud jobs write their output to a log file or a collector, where a progress bar's
carriage returns are noise and an hour without a line looks like a hang. Training has its
own callback (callbacks.Progress, with the bar on a terminal); the other long work
(checking a folder's files, evaluating or predicting over a large split, an export's
proof) says how far it is through a Countdown: a line every EVERY_SECONDS while it runs,
none for work shorter than that.
"""

import time
import typing

from absl import logging
import tensorflow as tf

# configs/base.py's train.log_every_seconds default; work without a run's config uses it.
EVERY_SECONDS = 60.0


def duration(seconds):
  """'1 h 05 min', '4 min 40 s' or '12 s'."""
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
  if seconds >= 60:
    return f"{seconds // 60} min {seconds % 60:02d} s"
  return f"{seconds} s"


class Countdown:
  """`update(done)` as work advances; a line when `every_seconds` passed since the last:
  "<what>: 1200/5000 images (24 %), about 3 min 10 s left." (without a total: the count)."""

  def __init__(self,
               what: str,
               total: typing.Optional[int],
               unit: str,
               every_seconds: float = EVERY_SECONDS,
               clock=time.monotonic):
    self.what, self.total, self.unit = what, total, unit
    self.every_seconds, self.clock = every_seconds, clock
    self._start = self._last = clock()

  def update(self, done):
    now = self.clock()
    if now - self._last < self.every_seconds:
      return
    self._last = now
    if not self.total:
      logging.info("%s: %d %s so far.", self.what, done, self.unit)
      return
    left = (self.total - done) * (now - self._start) / max(done, 1)
    logging.info("%s: %d/%d %s (%.0f %%), about %s left.", self.what, done, self.total, self.unit,
                 100 * done / self.total, duration(left))


class BatchCountdown(tf.keras.callbacks.Callback):
  """A Countdown over the batches of model.evaluate or model.predict."""

  def __init__(self, what, dataset, every_seconds=EVERY_SECONDS):
    super().__init__()
    batches = int(tf.data.experimental.cardinality(dataset))
    self.countdown = Countdown(what, batches if batches > 0 else None, "batches", every_seconds)

  def on_test_batch_end(self, batch, logs=None):
    self.countdown.update(batch + 1)

  def on_predict_batch_end(self, batch, logs=None):
    self.countdown.update(batch + 1)
