"""train.checkpoint_every_steps: kill -9 mid-epoch, and the rerun continues mid-epoch.

Real `launch.train` processes on an image folder the test writes (JPEG and PNG files of
mixed sizes and colour modes), trained at image_size=16 with random-resized crops. The run
is killed right after a step checkpoint inside the first epoch; the same command then
resumes at that step (not at the epoch's start), so at most checkpoint_every_steps steps
are lost, and ends with the weights of a run that was never interrupted: the resumed
input pipeline skips exactly the examples already trained on, without decoding them.
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

_EVERY = 4
_STEPS_PER_EPOCH = 40
_CHECKPOINTED = re.compile(r"Checkpointed step (\d+)")


def _flags(image_dir, trainer):
  return (
      *testutil.image_folder_flags(image_dir),
      "--config.dataset.cache=none",
      "--config.dataset.crop.policy=imagenet",  # random crops (auto: square at 16 px)
      "--config.model.name=mlp",
      "--config.train.batch_size=8",
      f"--config.train.steps_per_epoch={_STEPS_PER_EPOCH}",
      "--config.train.epochs=2",
      f"--config.train.checkpoint_every_steps={_EVERY}",
      "--config.train.deterministic=True",
      "--config.precision=float32",
      f"--config.trainer={trainer}")


class StepCheckpointTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.image_dir = os.path.join(absltest.get_default_test_tmpdir(), "folder")
    testutil.write_image_folder(cls.image_dir)

  @parameterized.parameters("fit", "custom_loop")
  def test_kill_mid_epoch_loses_at_most_n_steps_and_ends_like_an_unbroken_run(self, trainer):
    flags = _flags(self.image_dir, trainer)
    env = dict(os.environ, PYTHONPATH=testutil.REPO_ROOT)
    command = [sys.executable, "-m", "launch.train", *flags]
    unbroken = subprocess.Popen([*command, f"--workdir={self.create_tempdir().full_path}"],
                                cwd=testutil.REPO_ROOT,
                                env=env,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT,
                                text=True)
    workdir = self.create_tempdir().full_path
    log_path = os.path.join(workdir, "..", f"killed-{trainer}.log")
    with open(log_path, "w") as log:
      broken = subprocess.Popen([*command, f"--workdir={workdir}"],
                                cwd=testutil.REPO_ROOT,
                                env=env,
                                stdout=log,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    checkpointed = []
    while not any(_EVERY * 2 <= s < _STEPS_PER_EPOCH for s in checkpointed):
      self.assertIsNone(broken.poll(), open(log_path).read()[-3000:])
      self.assertLess(time.monotonic(), deadline)
      time.sleep(0.02)
      checkpointed = [int(s) for s in _CHECKPOINTED.findall(open(log_path).read())]
    broken.send_signal(signal.SIGKILL)
    self.assertEqual(broken.wait(), -signal.SIGKILL)
    # Steps may have run after the last line: the kill loses fewer than _EVERY of them
    # (the next step checkpoint was not reached, or its line would be in the log).
    last = max(int(s) for s in _CHECKPOINTED.findall(open(log_path).read()))
    self.assertLess(last, _STEPS_PER_EPOCH)

    resumed = testutil.run_launcher("train", *flags, f"--workdir={workdir}")
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    # Mid-epoch: at the step checkpointed last, not at the start of epoch 1.
    self.assertEqual(testutil.resumed_step(resumed.stderr), last)
    unbroken_output = unbroken.communicate(timeout=300)[0]
    self.assertEqual(unbroken.returncode, 0, unbroken_output[-3000:])
    expected = testutil.weights_fingerprint(unbroken_output)
    self.assertAlmostEqual(testutil.weights_fingerprint(resumed.stderr),
                           expected,
                           delta=1e-6 * expected)
    metrics = testutil.read_json(os.path.join(workdir, "metrics.json"), {})
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2])
    self.assertEqual(metrics["bad_files"], {"train": 0, "eval": 0})
    # TensorBoard scalars at the same cadence.
    self.assertNotEmpty(os.listdir(os.path.join(workdir, "tensorboard", "train_steps")))


if __name__ == "__main__":
  absltest.main()
