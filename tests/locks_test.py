"""One run per workdir, held by the kernel (flock) for local workdirs.

What the pid-file lock this replaced got wrong, each a test: a lock file read before its
JSON is written, two runs started at the same instant, a holder that is PID 1 in a
container, a recycled pid, and a holder killed with SIGKILL.
"""

import json
import os
import signal
import subprocess
import sys

from absl.testing import absltest

from tests import testutil
from kmodels import training
from kmodels.errors import UserError
from kmodels.storage import locks
from kmodels.workdir import Workdir

_HOLD = """
import os, sys
sys.path.insert(0, {root!r})
from kmodels.storage import locks
go = int(sys.argv[2])
if go >= 0:  # a barrier: every holder blocks here until the test closes the pipe's end
  print("ready", flush=True)
  os.read(go, 1)
try:
  held = locks.acquire(sys.argv[1], "workdir")
except Exception as e:
  print("refused:", e, flush=True)
  sys.exit(0)
print("acquired", flush=True)
sys.stdin.read()  # hold until the test closes stdin (or kills this process)
held.release()
"""


def _holder(lock_path, go_fd=-1):
  """A separate process that takes the lock and holds it until its stdin closes.

  With `go_fd`, the read end of a pipe, it first prints "ready" and waits for that pipe to
  close, so several holders can be released at the same instant.
  """
  return subprocess.Popen(
      [sys.executable, "-c",
       _HOLD.format(root=testutil.REPO_ROOT), lock_path,
       str(go_fd)],
      stdin=subprocess.PIPE,
      stdout=subprocess.PIPE,
      text=True,
      pass_fds=(go_fd,) if go_fd >= 0 else ())


class FileLockTest(absltest.TestCase):

  def setUp(self):
    super().setUp()
    self.root = self.create_tempdir().full_path
    self.lock_path = os.path.join(self.root, ".lock")

  def test_a_held_lock_refuses_with_the_owner_and_stays(self):
    holder = _holder(self.lock_path)
    self.assertEqual(holder.stdout.readline().strip(), "acquired")
    with self.assertRaisesRegex(UserError, f"in use by another run \\(pid {holder.pid} "):
      locks.acquire(self.lock_path, self.root)
    self.assertEqual(json.loads(testutil.read_text(self.lock_path))["pid"], holder.pid)
    holder.kill()
    holder.wait()

  def test_sigkill_of_the_holder_frees_the_workdir(self):
    holder = _holder(self.lock_path)
    self.assertEqual(holder.stdout.readline().strip(), "acquired")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    locks.acquire(self.lock_path, self.root).release()
    self.assertFalse(os.path.exists(self.lock_path))

  def test_lock_file_without_its_json_yet_is_still_a_held_lock(self):
    holder = _holder(self.lock_path)
    self.assertEqual(holder.stdout.readline().strip(), "acquired")
    with open(self.lock_path, "w") as f:  # as if read between open() and write()
      f.write('{"pid": 12')
    with self.assertRaisesRegex(UserError, r"in use by another run \(pid \? on \?"):
      locks.acquire(self.lock_path, self.root)
    holder.kill()
    holder.wait()

  def test_stale_files_naming_pid_1_or_a_live_recycled_pid_do_not_block(self):
    for pid in (1, os.getpid()):  # PID 1 in a container; a pid now used by someone else
      with open(self.lock_path, "w") as f:
        json.dump({"pid": pid, "host": os.uname().nodename, "started": "earlier"}, f)
      held = locks.acquire(self.lock_path, self.root)
      self.assertEqual(json.loads(testutil.read_text(self.lock_path))["pid"], os.getpid())
      held.release()

  def test_runs_started_at_the_same_instant_one_wins(self):
    go_read, go_write = os.pipe()
    holders = [_holder(self.lock_path, go_read) for _ in range(4)]
    os.close(go_read)
    for h in holders:  # every process has imported and waits at the barrier
      self.assertEqual(h.stdout.readline().strip(), "ready")
    os.close(go_write)  # all of them go at once
    answers = [h.stdout.readline().strip() for h in holders]
    for h in holders:
      h.stdin.close()
      h.wait()
    self.assertEqual(sum(a == "acquired" for a in answers), 1, answers)
    self.assertEqual(sum(a.startswith("refused: Workdir workdir is in use") for a in answers), 3,
                     answers)
    self.assertFalse(os.path.exists(self.lock_path))  # the winner released it; nobody else

  def test_a_busy_workdir_is_refused_before_any_output(self):
    holder = _holder(os.path.join(self.root, ".lock"))
    self.assertEqual(holder.stdout.readline().strip(), "acquired")
    with self.assertRaisesRegex(UserError, "in use by another run"):
      training.train_and_evaluate(testutil.tiny_config(dataset__source="synthetic"), self.root)
    self.assertFalse(os.path.exists(Workdir(self.root).config_json))
    holder.kill()
    holder.wait()


if __name__ == "__main__":
  absltest.main()
