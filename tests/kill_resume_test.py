"""SIGKILL mid-run, then the same command resumes: a cell per strategy and per trainer.

Together with multi_worker_test (two worker processes, one killed) and gcs_test (fit and
custom_loop on a bucket workdir), every strategy that can train here and every trainer is
killed with SIGKILL between epochs and resumed by running the same command again. (tpu
without a TPU is refused before any work: matrix_test.) Each run is a real `launch.train`
process; the kill lands after two epochs, so the first epoch's checkpoint is written.
"""

import os
import re
import signal
import subprocess
import sys
import time

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil

# Epochs per run: enough that the kill lands mid-run. An Estimator epoch takes seconds
# (a graph per train/evaluate call); a Keras epoch of 8 steps a fraction of one.
_EPOCHS = {"fit": 24, "custom_loop": 24, "estimator": 6, "keras_estimator": 6}
_CELLS = (  # (strategy flags, logical CPUs for the process, trainer)
    ("one_device", ["--config.distribution.strategy=one_device"], 1, "custom_loop"),
    ("mirrored_1",
     ["--config.distribution.strategy=mirrored",
      "--config.distribution.devices=cpu:0"], 1, "estimator"),
    ("mirrored_2",
     ["--config.distribution.strategy=mirrored",
      "--config.distribution.devices=cpu:0,cpu:1"], 2, "fit"),
    ("default", ["--config.distribution.strategy=default"], 1, "keras_estimator"),
    ("default_fit", ["--config.distribution.strategy=default"], 1, "fit"),
)


def _command(workdir, strategy_flags, cpus, trainer):
  return [
      sys.executable, "-m", "tests.logical_cpus",
      str(cpus), "launch.train", "--config=configs/base.py", f"--workdir={workdir}",
      "--config.dataset.source=synthetic", "--config.dataset.name=mnist",
      "--config.dataset.synthetic_train_examples=512", "--config.model.name=mlp",
      "--config.train.batch_size=16", "--config.train.steps_per_epoch=8",
      f"--config.train.epochs={_EPOCHS[trainer]}", f"--config.trainer={trainer}",
      "--config.precision=auto", *strategy_flags
  ]


class KillResumeTest(parameterized.TestCase):

  @parameterized.named_parameters(*_CELLS)
  def test_sigkill_then_the_same_command_finishes_every_epoch(self, strategy_flags, cpus, trainer):
    if trainer.endswith("estimator") and not testutil.HAS_ESTIMATOR:
      self.skipTest("tf.estimator is not on this lane (its refusal: estimator_test)")
    workdir = self.create_tempdir().full_path
    command = _command(workdir, strategy_flags, cpus, trainer)
    env = dict(os.environ, PYTHONPATH=testutil.REPO_ROOT)
    history = os.path.join(workdir, "history.json")
    with open(os.path.join(workdir, "..", "killed.log"), "w") as log:
      proc = subprocess.Popen(command,
                              cwd=testutil.REPO_ROOT,
                              env=env,
                              stdout=log,
                              stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    # Two epochs in history: the first one's checkpoint is surely written.
    while len(testutil.read_json(history, [])) < 2:
      self.assertIsNone(proc.poll(), "training ended before it could be killed")
      self.assertLess(time.monotonic(), deadline)
      time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    self.assertEqual(proc.wait(), -signal.SIGKILL)
    done_before_kill = len(testutil.read_json(history, []))
    epochs = _EPOCHS[trainer]
    self.assertBetween(done_before_kill, 2, epochs - 1)

    rerun = subprocess.run(command,
                           cwd=testutil.REPO_ROOT,
                           env=env,
                           capture_output=True,
                           text=True,
                           timeout=600)
    self.assertEqual(rerun.returncode, 0, rerun.stderr[-3000:])
    resumed = re.search(r"Resumed from the checkpoint of epoch (\d+)", rerun.stderr)
    self.assertIsNotNone(resumed, rerun.stderr[-3000:])
    # At most the epoch in flight (history written, checkpoint not yet) is trained again.
    self.assertGreaterEqual(int(resumed.group(1)), done_before_kill - 1)
    self.assertEqual([h["epoch"] for h in testutil.read_json(history, [])],
                     list(range(1, epochs + 1)))
    metrics = testutil.read_json(os.path.join(workdir, "metrics.json"), {})
    self.assertEqual(metrics["status"], "completed")
    self.assertEqual(metrics["trainer"], trainer)


if __name__ == "__main__":
  absltest.main()
