"""The CPUs a process may use: affinity (taskset) and cgroup quotas, read for real."""

import math
import os
import subprocess
import sys

from absl.testing import absltest

from tests import testutil
from kmodels import cpus

# Prints what size_thread_pools did and the intra-op pool size TensorFlow was given.
_SIZE_POOLS = ("from kmodels import runtime; runtime.configure(); import tensorflow as tf; "
               "from kmodels import cpus; "
               "print(cpus.size_thread_pools(), "
               "tf.config.threading.get_intra_op_parallelism_threads())")


def _one_cpu_cgroup():
  """(a new cgroup directory, a function giving it a one-CPU quota), or (None, None).

  cgroup v2 where its root lists the cpu controller for children (most hosts today);
  else the v1 cpu hierarchy (hybrid hosts, like the ones CI has run on so far).
  """
  v2, v1 = "/sys/fs/cgroup", "/sys/fs/cgroup/cpu"
  name = f"kmodels-test-{os.getpid()}"
  subtree = os.path.join(v2, "cgroup.subtree_control")
  if os.access(subtree, os.W_OK) and "cpu" in testutil.read_text(subtree).split():
    group = os.path.join(v2, name)
    os.mkdir(group)
    return group, lambda: _write(os.path.join(group, "cpu.max"), "100000 100000")
  if os.access(v1, os.W_OK) and os.path.exists(os.path.join(v1, "cpu.cfs_quota_us")):
    group = os.path.join(v1, name)
    os.mkdir(group)
    period = testutil.read_text(os.path.join(group, "cpu.cfs_period_us")).strip()
    return group, lambda: _write(os.path.join(group, "cpu.cfs_quota_us"), period)
  return None, None


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)


class CpusTest(absltest.TestCase):

  def test_cgroup_v2_and_v1_quotas(self):
    v2 = self.create_tempfile("cpu.max", "150000 100000\n").full_path
    self.assertEqual(cpus.cgroup_cpu_limit(v2_path=v2), 1.5)
    unlimited = self.create_tempfile("cpu.max.2", "max 100000\n").full_path
    self.assertIsNone(cpus.cgroup_cpu_limit(v2_path=unlimited, v1_paths=("/no", "/no")))
    quota = self.create_tempfile("quota", "200000").full_path
    period = self.create_tempfile("period", "100000").full_path
    self.assertEqual(cpus.cgroup_cpu_limit(v2_path="/no", v1_paths=(quota, period)), 2.0)

  def test_the_own_cgroup_is_found_from_proc_self_cgroup(self):
    proc_cgroup = self.create_tempfile(
        "cgroup", "4:cpu,cpuacct:/kubepods/pod1\n1:memory:/other\n0::/user.slice/job\n")
    files = cpus.own_cgroup_files(proc_cgroup.full_path, root="/cg")
    self.assertEqual(
        files,
        [("/cg/user.slice/job/cpu.max",
          ("/cg/cpu/kubepods/pod1/cpu.cfs_quota_us", "/cg/cpu/kubepods/pod1/cpu.cfs_period_us")),
         ("/cg/cpu.max", ("/cg/cpu/cpu.cfs_quota_us", "/cg/cpu/cpu.cfs_period_us"))])

  def test_a_launcher_in_a_cgroup_with_a_one_cpu_quota_sizes_its_pools_to_one(self):
    """A real one-CPU quota (as `docker --cpus=1` sets), cgroup v2 or v1, where allowed."""
    if os.cpu_count() < 2:
      self.skipTest("needs a machine with 2 CPUs or more")
    group, limit = _one_cpu_cgroup()
    if group is None:
      self.skipTest("needs a cgroup this root may make: the cgroup v2 cpu controller "
                    "delegated to /sys/fs/cgroup, or a writable cgroup v1 cpu hierarchy")
    try:
      limit()
      proc = subprocess.run([
          "sh", "-c", f'echo $$ > {group}/cgroup.procs && exec "$0" -c "$1"', sys.executable,
          _SIZE_POOLS
      ],
                            cwd=testutil.REPO_ROOT,
                            capture_output=True,
                            text=True,
                            timeout=120,
                            env=dict(os.environ, PYTHONPATH=testutil.REPO_ROOT))
    finally:
      os.rmdir(group)
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertEqual(proc.stdout.split()[-2:], ["1", "1"])

  def test_pool_sizes_the_user_set_are_kept(self):
    if os.cpu_count() < 2:
      self.skipTest("needs a machine with 2 CPUs or more")
    proc = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", _SIZE_POOLS],
                          cwd=testutil.REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=120,
                          env=dict(os.environ,
                                   PYTHONPATH=testutil.REPO_ROOT,
                                   TF_NUM_INTRAOP_THREADS="2"))
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertEqual(proc.stdout.split()[-2:], ["None", "0"])

  def test_usable_is_affinity_capped_by_the_quota(self):
    affinity = len(os.sched_getaffinity(0))
    quota = cpus.cgroup_cpu_limit()  # this machine's own, if any
    self.assertEqual(cpus.usable_cpus(),
                     affinity if quota is None else min(affinity, math.ceil(quota)))
    self.assertEqual(cpus.usable_cpus(limit=0.5), 1)
    self.assertEqual(cpus.usable_cpus(limit=1000), affinity)

  def test_a_launcher_pinned_to_one_cpu_sizes_tensorflows_pools_to_it(self):
    if os.cpu_count() < 2:
      self.skipTest("needs a machine with 2 CPUs or more")
    proc = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", _SIZE_POOLS],
                          cwd=testutil.REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=120,
                          env=dict(os.environ, PYTHONPATH=testutil.REPO_ROOT))
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertEqual(proc.stdout.split()[-2:], ["1", "1"])


if __name__ == "__main__":
  absltest.main()
