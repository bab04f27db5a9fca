"""Mixed precision: `auto` resolved for the hardware, and the policy set for one run.

`precision: auto` picks what is fast where the run lands (measured on 2-core CPUs of
three kinds, kmodels/docs/measurements.md "Speed"): mixed_bfloat16 on TPUs, on GPUs of
compute capability >= 8.0 and on CPUs with native bf16 (AMX or AVX512_BF16; ~2-4x float32
there), where bf16 without them is emulated and ~3x *slower*; mixed_float16 on GPUs of compute
capability 7.x; float32 otherwise and for the Estimator trainers (they predate Keras
mixed precision).
"""

import contextlib
import time
import typing

from absl import logging
import tensorflow as tf

from kmodels.errors import UserError

AUTO = "auto"
PRECISIONS = (AUTO, "float32", "mixed_float16", "mixed_bfloat16")
NATIVE_BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")
_CPUINFO = "/proc/cpuinfo"


class Choice(typing.NamedTuple):
  precision: str
  reason: str


def cpu_flags(path=_CPUINFO):
  """The CPU's feature flags from /proc/cpuinfo, or None where that can't be read."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith("flags"):
          return set(line.split(":", 1)[1].split())
  except OSError:
    pass
  return None


def bf16_matmul_is_faster(size=512, repeats=5):
  """A short probe (~0.1 s): is a bfloat16 matmul faster than a float32 one here?"""
  seconds = {}
  for dtype in (tf.float32, tf.bfloat16):
    a = tf.cast(tf.random.uniform((size, size)), dtype)
    tf.linalg.matmul(a, a).numpy()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
      tf.linalg.matmul(a, a).numpy()
    seconds[dtype] = time.perf_counter() - start
  return seconds[tf.bfloat16] < seconds[tf.float32]


def _gpu_capability(gpu):
  details = tf.config.experimental.get_device_details(gpu)
  return tuple(details.get("compute_capability") or (0, 0))


def choose(devices=None,
           flags=None,
           probe=bf16_matmul_is_faster,
           gpu_capability=_gpu_capability,
           cpuinfo_path=_CPUINFO):
  """What `auto` means on a machine with these devices and CPU flags (both looked up when
  None); a pure function of its arguments otherwise, which is how tests cover GPUs/TPUs."""
  devices = tf.config.list_physical_devices() if devices is None else devices
  kinds = [d.device_type for d in devices]
  if "TPU" in kinds:
    return Choice("mixed_bfloat16", "a TPU is attached (bf16 is its native type)")
  gpus = [d for d in devices if d.device_type == "GPU"]
  if gpus:
    capability = min(gpu_capability(g) for g in gpus)
    name = f"GPU compute capability {capability[0]}.{capability[1]}"
    if capability >= (8, 0):
      return Choice("mixed_bfloat16", f"{name} (>= 8.0 has bf16 tensor cores)")
    if capability >= (7, 0):
      return Choice("mixed_float16", f"{name} (7.x: float16 tensor cores, no bf16)")
    return Choice("float32", f"{name} (< 7.0: no tensor cores)")
  flags = cpu_flags(cpuinfo_path) if flags is None else flags
  if flags is not None:
    native = sorted(set(NATIVE_BF16_CPU_FLAGS) & flags)
    if native:
      return Choice("mixed_bfloat16", f"CPU with native bf16 ({', '.join(native)})")
    return Choice(
        "float32", "CPU without AMX/AVX512_BF16 (bf16 would be emulated, ~3x "
        "slower than float32)")
  if probe():
    return Choice("mixed_bfloat16", "CPU flags unreadable; a bf16 matmul probe beat float32")
  return Choice("float32", "CPU flags unreadable; a bf16 matmul probe was slower")


def resolve(requested: str, trainer) -> str:
  """The precision a run uses for `requested` (auto or explicit), logged with why.

  trainer: its row of kmodels.trainers.TABLE (the precisions it supports).
  """
  if requested != AUTO:
    return requested
  if "mixed_bfloat16" not in trainer.precisions:
    choice = Choice("float32", f"trainer={trainer.name} trains in float32 only")
  else:
    choice = choose()
  logging.info("precision=auto -> %s: %s.", choice.precision, choice.reason)
  return choice.precision


def agree_across_workers(resolved, strategy):
  """In a multi-worker job every worker must train in the same precision; checks that."""
  from kmodels import distribute  # pylint: disable=g-import-not-at-top
  if not distribute.is_multi_worker(strategy):
    return
  one_hot = tf.one_hot(PRECISIONS.index(resolved), len(PRECISIONS))

  @tf.function
  def count_by_precision(value):  # SUM is what every strategy can all-reduce
    per_replica = strategy.run(tf.identity, args=(value,))
    return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

  chosen = [PRECISIONS[i] for i, n in enumerate(count_by_precision(one_hot).numpy()) if n]
  if len(chosen) > 1:
    raise UserError(f"precision=auto resolved differently on the workers of this job "
                    f"({' and '.join(chosen)}): their hardware differs. Set "
                    "--config.precision to one value for every worker.")


# Measured (kmodels/docs/measurements.md "Speed"): CPUs have no fast float16 kernels, so a
# GPU config run on a CPU-only machine as it stands trains ~100x slower than with bfloat16.
FLOAT16_WITHOUT_GPU = (
    "precision=mixed_float16 on a machine without a GPU: CPUs have no fast float16 kernels "
    "(MiniGoogLeNet trained at 1.4 images/s against 131 with mixed_bfloat16 on 2 CPU "
    "cores). Unless this run is meant for a GPU, pass --config.precision=mixed_bfloat16 "
    "(CPUs with AVX512_BF16/AMX, TPUs) or float32.")


@contextlib.contextmanager
def policy(name):
  """Sets the global Keras dtype policy inside the block and restores the old one after.

  The policy is process-global in Keras, so restoring it keeps one run (or one test)
  from changing the precision of the next one in the same process.
  """
  if name == "mixed_float16" and not tf.config.list_physical_devices("GPU"):
    logging.warning(FLOAT16_WITHOUT_GPU)
  previous = tf.keras.mixed_precision.global_policy()
  tf.keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    tf.keras.mixed_precision.set_global_policy(previous)
