"""How many CPUs this process may really use, and TensorFlow's thread pools sized to it.

TensorFlow sizes its pools from the CPU affinity mask (`taskset`, `docker --cpuset-cpus`),
but not from a cgroup CPU quota (`docker --cpus=2`, Kubernetes CPU limits): in a container
limited to 2 of 64 cores it starts 64 threads per pool that then queue for 2 cores' worth
of time. `size_thread_pools` caps both pools at the usable count when that is lower.
"""

import math
import os

from absl import logging
import tensorflow as tf

_CGROUP_V2 = "/sys/fs/cgroup/cpu.max"
_CGROUP_V1 = ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def cgroup_cpu_limit(v2_path=_CGROUP_V2, v1_paths=_CGROUP_V1):
  """The CPU quota of this process's cgroup in CPUs (may be fractional), or None."""
  try:
    with open(v2_path) as f:
      quota, period = f.read().split()[:2]
    return None if quota == "max" else int(quota) / int(period)
  except (OSError, ValueError):
    pass
  try:
    quota, period = (int(open(p).read()) for p in v1_paths)
    return None if quota <= 0 else quota / period
  except (OSError, ValueError):
    return None


def usable_cpus(limit=None):
  """CPUs this process may run on: its affinity mask, capped by a cgroup quota."""
  count = len(os.sched_getaffinity(0))
  limit = cgroup_cpu_limit() if limit is None else limit
  return max(1, min(count, math.ceil(limit))) if limit else count


def size_thread_pools():
  """Caps TensorFlow's intra- and inter-op pools at the usable CPUs (call before any op)."""
  usable, present = usable_cpus(), os.cpu_count() or 1
  if usable >= present:
    return None
  if tf.config.threading.get_intra_op_parallelism_threads() == 0:  # 0: the user set none
    tf.config.threading.set_intra_op_parallelism_threads(usable)
  if tf.config.threading.get_inter_op_parallelism_threads() == 0:
    tf.config.threading.set_inter_op_parallelism_threads(usable)
  logging.info("This process may use %d of the machine's %d CPUs (affinity/cgroup quota): "
               "TensorFlow's thread pools are sized to %d.", usable, present, usable)
  return usable
