"""A run shows its progress where its output is read, for every trainer.

Output to a file (a cloud job's log): a line every train.log_every_seconds and at the
epoch's last step, steps increasing to the epoch's, no carriage returns, the same numbers
in TensorBoard. Output to a terminal (a pseudo-terminal here): Keras' progress bar.
Real launcher processes: whether stdout is a terminal is decided by the process.
"""

import os
import pty
import re
import select
import subprocess
import sys
import time
import types

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

from kmodels import callbacks, progress
from kmodels.data import preparation
from tests import testutil

TRAINERS = ("fit", "custom_loop") + (("estimator", "keras_estimator") if testutil.HAS_ESTIMATOR else
                                     ())
_LINE = re.compile(r"Epoch (\d+)/(\d+), step (\d+)/(\d+): (.*); (\d+) images/s; "
                   r"epoch ends in ([^.]+)\.")


def _train_command(workdir, trainer, steps, interval):
  return [
      sys.executable, "-m", "launch.train", "--config=configs/base.py", f"--workdir={workdir}",
      "--config.dataset.name=fashion_mnist", "--config.dataset.source=synthetic",
      "--config.model.name=shallownet", f"--config.trainer={trainer}", "--config.train.epochs=1",
      f"--config.train.steps_per_epoch={steps}", "--config.train.batch_size=64",
      f"--config.train.log_every_seconds={interval}", "--config.dataset.synthetic_eval_examples=64"
  ]


def _scalars(logdir, tag):
  """{step: value} of scalar `tag` in the event files of `logdir`."""
  return {
      event.step: float(tf.make_ndarray(value.tensor))
      for path in tf.io.gfile.glob(os.path.join(logdir, "events.*"))
      for event in tf.compat.v1.train.summary_iterator(path)
      for value in event.summary.value
      if value.tag == tag
  }


def _env():
  return dict(os.environ, PYTHONPATH=testutil.REPO_ROOT)


class _Clock:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


class ProgressLinesTest(absltest.TestCase):
  """The lines' arithmetic, on a clock the test moves: one second per step."""

  def _run(self, first_step, steps=100, every_seconds=10.0):
    clock = _Clock()
    progress = callbacks.Progress(epochs=3,
                                  steps_per_epoch=steps,
                                  global_batch_size=64,
                                  every_seconds=every_seconds,
                                  terminal=False,
                                  clock=clock)
    with self.assertLogs(level="INFO") as logged:
      progress.on_epoch_begin(1)
      for step in range(first_step, steps + 1):
        clock.now += 1.0
        progress.on_train_batch_end(step - 1, {"loss": 1.0 / step, "accuracy": 0.5})
      progress.on_epoch_end(1)
    return [m for m in logged.output if "step" in m]

  def test_a_resumed_epoch_counts_from_its_resume_point(self):
    lines = self._run(first_step=41)  # resumed after step 40 of 100
    self.assertLen(lines, 6)  # steps 51, 61, ..., 91 at 10 s, and the last, 100
    first = _LINE.search(lines[0]).groups()
    self.assertEqual(first[:4], ("2", "3", "51", "100"))
    self.assertEqual(first[5], "64")  # 10 steps of 64 images in 10 s
    self.assertEqual(first[6], "49 s")  # 49 steps left at 1 s each
    self.assertEqual(_LINE.search(lines[-1]).groups()[2:4], ("100", "100"))
    self.assertIn("loss 0.0100, accuracy 0.5000", lines[-1])

  def test_an_epoch_resumed_at_its_last_step_still_ends_with_a_line(self):
    lines = self._run(first_step=100)
    self.assertLen(lines, 1)
    self.assertEqual(_LINE.search(lines[0]).groups()[2:4], ("100", "100"))

  def test_long_epochs_say_minutes_and_hours(self):
    lines = self._run(first_step=1, steps=5000, every_seconds=600)
    self.assertIn("epoch ends in 1 h 13 min", lines[0])  # step 601: 4399 s left
    self.assertIn("epoch ends in 3 min 19 s", lines[-2])  # step 4801: 199 s left


class CountdownTest(absltest.TestCase):
  """Long work outside training (a folder's files, evaluation, an export's proof)."""

  def test_a_line_per_interval_with_the_share_done_and_the_time_left(self):
    clock = _Clock()
    countdown = progress.Countdown("Checking the files of train",
                                   1000,
                                   "files",
                                   every_seconds=60,
                                   clock=clock)
    with self.assertLogs(level="INFO") as logged:
      for done in range(10, 1001, 10):  # 10 files a second
        clock.now += 1.0
        countdown.update(done)
    self.assertEqual([m.split(":", 2)[-1] for m in logged.output],
                     ["Checking the files of train: 600/1000 files (60 %), about 40 s left."])

  def test_work_shorter_than_the_interval_says_nothing_and_no_total_says_the_count(self):
    clock = _Clock()
    quiet = progress.Countdown("Evaluating", 5, "batches", every_seconds=60, clock=clock)
    counting = progress.Countdown("Predicting", None, "batches", every_seconds=1, clock=clock)
    with self.assertLogs(level="INFO") as logged:
      for done in range(1, 6):
        clock.now += 1.0
        quiet.update(done)
        counting.update(done)
    self.assertLen(logged.output, 5)
    self.assertTrue(all("Predicting: " in m and "so far" in m for m in logged.output))


class PreparationTest(absltest.TestCase):

  def test_preparing_a_dataset_says_what_it_wrote_while_it_writes(self):
    root = self.create_tempdir().full_path
    builder = types.SimpleNamespace(name="fashion_mnist",
                                    version="3.0.1",
                                    data_dir=os.path.join(root, "fashion_mnist", "3.0.1"))
    with self.assertLogs(level="INFO") as logged:
      with preparation.preparing(builder, every_seconds=0.05):
        os.makedirs(builder.data_dir + ".incomplete")
        with open(os.path.join(builder.data_dir + ".incomplete", "train.tfrecord"), "wb") as f:
          f.write(b"\0" * 3_000_000)
        time.sleep(0.3)
    lines = [m.split(":", 2)[-1] for m in logged.output]
    self.assertStartsWith(lines[0], "Preparing fashion_mnist 3.0.1 into ")
    self.assertIn("Preparing fashion_mnist: 3 MB written so far, 0 s.", lines)
    self.assertStartsWith(lines[-1], "Prepared fashion_mnist in ")


class LogFileTest(parameterized.TestCase):

  @parameterized.parameters(*TRAINERS)
  def test_output_to_a_file_gets_progress_lines_and_tensorboard_the_same(self, trainer):
    workdir = self.create_tempdir().full_path
    log_path = os.path.join(self.create_tempdir().full_path, "train.log")
    # ~3 s of steps after the first (traced) call at a 0.5 s interval: several lines.
    steps = 600 if "estimator" in trainer else 300
    with open(log_path, "w") as log:
      proc = subprocess.run(_train_command(workdir, trainer, steps, 0.5),
                            cwd=testutil.REPO_ROOT,
                            env=_env(),
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            timeout=600)
    text = testutil.read_text(log_path)
    self.assertEqual(proc.returncode, 0, text[-3000:])
    self.assertNotIn("\r", text)
    lines = _LINE.findall(text)
    self.assertGreaterEqual(len(lines), 2, text[-3000:])
    done = [int(line[2]) for line in lines]
    self.assertEqual(done, sorted(set(done)), "steps increase")
    self.assertEqual((done[-1], int(lines[-1][3])), (steps, steps))  # the epoch's last step
    self.assertTrue(all(int(line[5]) > 0 for line in lines), lines)
    self.assertIn("loss", lines[-1][4])
    if "estimator" not in trainer:  # an Estimator's training graph has no accuracy
      self.assertIn("accuracy", lines[-1][4])
    # TensorBoard holds the lines' numbers at the lines' steps.
    loss = _scalars(os.path.join(workdir, "tensorboard", "train_progress"), "loss")
    self.assertEqual(sorted(loss), done)
    logged_loss = float(re.search(r"loss ([0-9.]+)", lines[-1][4]).group(1))
    self.assertAlmostEqual(loss[steps], logged_loss, places=4)


class TerminalTest(parameterized.TestCase):

  @parameterized.parameters(*TRAINERS)
  def test_a_terminal_gets_the_progress_bar(self, trainer):
    main, child = pty.openpty()
    proc = subprocess.Popen(_train_command(self.create_tempdir().full_path, trainer, 6, 0.001),
                            cwd=testutil.REPO_ROOT,
                            env=_env(),
                            stdout=child,
                            stderr=child)
    os.close(child)
    output = b""
    while True:  # read until the child closes the terminal
      ready, _, _ = select.select([main], [], [], 600)
      try:
        chunk = os.read(main, 65536) if ready else b""
      except OSError:  # EIO: the child's side is closed
        chunk = b""
      if not chunk:
        break
      output += chunk
    os.close(main)
    self.assertEqual(proc.wait(timeout=60), 0, output[-3000:])
    text = output.decode(errors="replace")
    self.assertIn("Epoch 1/1", text)
    self.assertRegex(text, r"6/6 \[=+\]")  # the bar, complete
    self.assertNotRegex(text, _LINE)  # the bar instead of log lines


if __name__ == "__main__":
  absltest.main()
