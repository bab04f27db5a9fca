"""MultiWorkerMirroredStrategy for real: two `launch.train` processes on localhost.

Each worker gets its TF_CONFIG the way TFJob or Vertex AI would set it. The tests check
that workers stay in sync, that only the chief writes the workdir, and that SIGTERM to one
worker stops the job at one step, from which it resumes. A worker killed with SIGKILL, and
the job restarted as Kubernetes would: tests/cluster_test.py. The jobs accumulate
gradients (train.accumulate_steps), so the workers' agreement and the resumed job's weights
check that under this strategy too.
"""

import functools
import os
import re
import signal
import tempfile
import time

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil

_TIMEOUT_SECONDS = 300
# What the chief leaves in a workdir; nothing of the other worker's may be in it.
_CHIEF_OUTPUTS = {
    "config.json", "checkpoints", "tensorboard", "export", "metrics.json", "history.json",
    "curves.png", "classification_report.txt", "confusion_matrix.png"
}


def _job_args(workdir, trainer, epochs, steps_per_epoch=4):
  return [
      "--config=configs/base.py",
      f"--workdir={workdir}",
      "--config.dataset.source=synthetic",
      "--config.dataset.name=mnist",
      "--config.dataset.synthetic_train_examples=256",
      "--config.model.name=mlp",
      "--config.train.batch_size=16",
      f"--config.train.steps_per_epoch={steps_per_epoch}",
      f"--config.train.epochs={epochs}",
      f"--config.trainer={trainer}",
      "--config.train.deterministic=True",
      # Gradient accumulation under MultiWorkerMirroredStrategy too: 50 steps per epoch
      # leave 2 pending at the epoch's end, and a SIGTERM mid-epoch perhaps some more.
      "--config.train.accumulate_steps=3",
      "--config.train.log_every_seconds=0.001"
  ]  # a progress line at every step


def _progress_steps(text):
  """(epoch, step of epoch) of each progress line in a worker's log."""
  return [(int(epoch), int(step))
          for epoch, step in re.findall(r"Epoch (\d+)/\d+, step (\d+)/\d+:", text)]


def _wait(processes, timeout=_TIMEOUT_SECONDS):
  deadline = time.monotonic() + timeout
  codes = []
  for proc in processes:
    try:
      codes.append(proc.wait(max(1, deadline - time.monotonic())))
    except Exception:  # timeout: don't leave workers behind
      for p in processes:
        p.kill()
      raise
  return codes


def _fingerprint(log_text):
  match = re.search(r"Weights fingerprint \(sum of \|w\|\): ([0-9.e+-]+)", log_text)
  return float(match.group(1)) if match else None


# Epochs of 50 steps: the SIGTERM goes when epoch 1 is in history.json, so it lands at
# that epoch's end or in epoch 2, never after the job's end.
_STEPS_PER_EPOCH = 50


@functools.lru_cache(maxsize=None)
def _unbroken_job(trainer):
  """One uninterrupted two-worker job per trainer: (workdir, exit codes, both logs)."""
  workdir = tempfile.mkdtemp(prefix=f"kmodels-unbroken-{trainer}-")
  processes, logs, _ = testutil.start_workers(_job_args(workdir, trainer, 2, _STEPS_PER_EPOCH))
  codes = _wait(processes)
  return workdir, codes, [testutil.read_text(log) for log in logs]


class MultiWorkerTest(parameterized.TestCase):

  @parameterized.parameters("fit", "custom_loop")
  def test_two_workers_train_in_sync_and_only_the_chief_writes(self, trainer):
    workdir, codes, texts = _unbroken_job(trainer)
    self.assertEqual(codes, [0, 0], texts[0][-3000:] + texts[1][-3000:])
    for text in texts:
      self.assertIn("with 2 replica(s)", text)
    self.assertIsNotNone(_fingerprint(texts[0]))
    self.assertEqual(_fingerprint(texts[0]), _fingerprint(texts[1]))
    self.assertEqual(set(os.listdir(workdir)), _CHIEF_OUTPUTS)
    leftovers = [
        os.path.join(root, d)
        for root, dirs, _ in os.walk(workdir)
        for d in dirs
        if "workertemp" in d or "kmodels-worker" in d
    ]
    self.assertEqual(leftovers, [])
    metrics = testutil.read_json(os.path.join(workdir, "metrics.json"), None)
    self.assertLen(metrics["history"], 2)
    self.assertIn("Test accuracy", texts[0])
    self.assertNotIn("Test accuracy", texts[1])  # the report is the chief's alone
    # Progress lines too (their log files are not terminals): the chief's alone.
    self.assertIn(f"Epoch 2/2, step {_STEPS_PER_EPOCH}/{_STEPS_PER_EPOCH}:", texts[0])
    self.assertEmpty(_progress_steps(texts[1]))

  @parameterized.parameters("fit", "custom_loop")
  def test_sigterm_to_one_worker_stops_the_job_at_one_step_and_it_resumes_there(self, trainer):
    steps_per_epoch = _STEPS_PER_EPOCH
    _, codes, unbroken_texts = _unbroken_job(trainer)
    self.assertEqual(codes, [0, 0], unbroken_texts[0][-3000:])
    unbroken = _fingerprint(unbroken_texts[0])

    workdir = self.create_tempdir().full_path
    args = _job_args(workdir, trainer, 2, steps_per_epoch)
    processes, logs, ports = testutil.start_workers(args)
    history_path = os.path.join(workdir, "history.json")
    deadline = time.monotonic() + _TIMEOUT_SECONDS
    while not testutil.read_json(history_path, []) and time.monotonic() < deadline:
      self.assertIsNone(processes[0].poll(), testutil.read_text(logs[0])[-3000:])
      time.sleep(0.02)
    # The non-chief only: the chief must learn it from its peer, at the same step.
    processes[1].send_signal(signal.SIGTERM)
    codes = _wait(processes)
    texts = [testutil.read_text(log) for log in logs]
    self.assertEqual(codes, [143, 143], texts[0][-3000:] + texts[1][-3000:])
    stopped_at = [
        re.search(r"Stopped by SIGTERM after .*\((\d+) steps in all\)", text) for text in texts
    ]
    self.assertTrue(all(stopped_at), texts[0][-3000:])
    steps_done = int(stopped_at[0][1])
    self.assertEqual(steps_done, int(stopped_at[1][1]))
    self.assertBetween(steps_done, steps_per_epoch, 2 * steps_per_epoch - 1)
    for text in texts:
      self.assertNotIn("Traceback", text)

    processes, logs, _ = testutil.start_workers(args, ports=ports)
    codes = _wait(processes)
    chief_log = testutil.read_text(logs[0])
    self.assertEqual(codes, [0, 0], chief_log[-3000:])
    for log in logs:  # every worker resumes right after the step the job stopped at
      self.assertEqual(testutil.resumed_step(testutil.read_text(log)), steps_done)
    # The resumed chief's progress counts from the resume point, in the resumed epoch.
    epoch, step = divmod(steps_done, steps_per_epoch)
    resumed = _progress_steps(chief_log)
    self.assertEqual(resumed[0][0], epoch + 1)
    self.assertGreater(resumed[0][1], step)
    self.assertEqual(resumed[-1], (2, steps_per_epoch))
    self.assertAlmostEqual(_fingerprint(chief_log), unbroken, delta=1e-6 * unbroken)


if __name__ == "__main__":
  absltest.main()
