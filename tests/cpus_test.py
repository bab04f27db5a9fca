"""The CPUs a process may use: affinity (taskset) and cgroup quotas, read for real."""

import math
import os
import subprocess
import sys

from absl.testing import absltest

from tests import testutil
from kmodels import cpus


class CpusTest(absltest.TestCase):

  def test_cgroup_v2_and_v1_quotas(self):
    v2 = self.create_tempfile("cpu.max", "150000 100000\n").full_path
    self.assertEqual(cpus.cgroup_cpu_limit(v2_path=v2), 1.5)
    unlimited = self.create_tempfile("cpu.max.2", "max 100000\n").full_path
    self.assertIsNone(cpus.cgroup_cpu_limit(v2_path=unlimited, v1_paths=("/no", "/no")))
    quota = self.create_tempfile("quota", "200000").full_path
    period = self.create_tempfile("period", "100000").full_path
    self.assertEqual(cpus.cgroup_cpu_limit(v2_path="/no", v1_paths=(quota, period)), 2.0)

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
    script = ("import kmodels, tensorflow as tf; from kmodels import cpus; "
              "print(cpus.size_thread_pools(), "
              "tf.config.threading.get_intra_op_parallelism_threads())")
    proc = subprocess.run(["taskset", "-c", "0", sys.executable, "-c", script],
                          cwd=testutil.REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=testutil.REPO_ROOT))
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    self.assertEqual(proc.stdout.split()[-2:], ["1", "1"])


if __name__ == "__main__":
  absltest.main()
