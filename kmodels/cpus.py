"""What this process may really use of the machine: CPUs (TensorFlow's thread pools and the
input pipeline's parallelism are sized to them) and memory (the input cache's budget).

TensorFlow sizes its pools from the CPU affinity mask (`taskset`, `docker --cpuset-cpus`),
but not from a cgroup CPU quota (`docker --cpus=2`, Kubernetes CPU limits): in a container
limited to 2 of 64 cores it starts 64 threads per pool that then queue for 2 cores' worth
of time. `size_thread_pools` caps both pools at the usable count when that is lower.

The quota is read from this process's own cgroup (/proc/self/cgroup names it), then from the
cgroup filesystem's root (what a container with its own cgroup namespace sees).
"""

import math
import os
import resource

from absl import logging
import tensorflow as tf

_CGROUP_ROOT = "/sys/fs/cgroup"
# Environment variables TensorFlow reads for its pool sizes: set, they are the user's choice.
_THREAD_VARIABLES = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def own_cgroup_files(proc_cgroup="/proc/self/cgroup", root=_CGROUP_ROOT):
  """[(v2 cpu.max path, (v1 quota path, v1 period path))] to try, own cgroup first."""
  own_v2 = own_v1 = "/"
  try:
    with open(proc_cgroup) as f:
      for line in f:  # "0::/path" (v2) or "4:cpu,cpuacct:/path" (v1)
        _, controllers, path = line.strip().split(":", 2)
        if not controllers:
          own_v2 = path
        elif "cpu" in controllers.split(","):
          own_v1 = path
  except (OSError, ValueError):
    pass
  candidates = []
  for v2, v1 in ((own_v2, own_v1), ("/", "/")):
    v1_dir = os.path.join(root, "cpu", v1.lstrip("/"))
    candidates.append((os.path.join(root, v2.lstrip("/"),
                                    "cpu.max"), (os.path.join(v1_dir, "cpu.cfs_quota_us"),
                                                 os.path.join(v1_dir, "cpu.cfs_period_us"))))
  return list(dict.fromkeys(candidates))


def cgroup_cpu_limit(v2_path=None, v1_paths=None):
  """The CPU quota of this process's cgroup in CPUs (may be fractional), or None.

  Without paths, tries this process's own cgroup, then the root (see own_cgroup_files).
  """
  if v2_path is None and v1_paths is None:
    limits = (cgroup_cpu_limit(v2, v1) for v2, v1 in own_cgroup_files())
    return next((limit for limit in limits if limit is not None), None)
  try:
    with open(v2_path) as f:
      quota, period = f.read().split()[:2]
    return None if quota == "max" else int(quota) / int(period)
  except (OSError, ValueError, TypeError):
    pass
  try:
    quota, period = (int(_read(p)) for p in v1_paths)
    return None if quota <= 0 else quota / period
  except (OSError, ValueError, TypeError):
    return None


def usable_cpus(limit=None):
  """CPUs this process may run on: its affinity mask, capped by a cgroup quota."""
  count = len(os.sched_getaffinity(0))
  limit = cgroup_cpu_limit() if limit is None else limit
  return max(1, min(count, math.ceil(limit))) if limit else count


def size_thread_pools():
  """Caps TensorFlow's intra- and inter-op pools at the usable CPUs (call before any op).

  Pool sizes the user chose (TF_NUM_INTRAOP_THREADS / TF_NUM_INTEROP_THREADS, or set
  through tf.config.threading before) are kept.
  """
  usable, present = usable_cpus(), os.cpu_count() or 1
  if usable >= present or any(os.environ.get(v) for v in _THREAD_VARIABLES):
    return None
  if tf.config.threading.get_intra_op_parallelism_threads() == 0:  # 0: the user set none
    tf.config.threading.set_intra_op_parallelism_threads(usable)
  if tf.config.threading.get_inter_op_parallelism_threads() == 0:
    tf.config.threading.set_inter_op_parallelism_threads(usable)
  logging.info(
      "This process may use %d of the machine's %d CPUs (affinity/cgroup quota): "
      "TensorFlow's thread pools are sized to %d.", usable, present, usable)
  return usable


def _cgroup_memory_limit(root=_CGROUP_ROOT):
  """This process's cgroup memory limit in bytes (v2 memory.max, v1 limit_in_bytes), or None."""
  candidates = [
      os.path.join(root, "memory.max"),
      os.path.join(root, "memory", "memory.limit_in_bytes")
  ]
  try:
    with open("/proc/self/cgroup") as f:
      for line in f:
        _, controllers, path = line.strip().split(":", 2)
        if not controllers:
          candidates.insert(0, os.path.join(root, path.lstrip("/"), "memory.max"))
        elif "memory" in controllers.split(","):
          candidates.insert(0,
                            os.path.join(root, "memory", path.lstrip("/"), "memory.limit_in_bytes"))
  except (OSError, ValueError):
    pass
  for path in candidates:
    try:
      with open(path) as f:
        value = f.read().strip()
    except OSError:
      continue
    if value != "max" and value.isdigit() and int(value) < 1 << 60:  # v1's "no limit" is huge
      return int(value)
  return None


def usable_memory_bytes():
  """Memory this process may still use: the available memory, capped by a cgroup limit."""
  available = None
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          available = int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  available = available or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  limit = _cgroup_memory_limit()
  return min(available, limit) if limit else available


def peak_rss_mb():
  """The most resident memory this process has held so far, in MB (Linux: ru_maxrss kB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _read(path):
  with open(path) as f:
    return f.read()
