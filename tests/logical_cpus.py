"""Runs a launcher with the host CPU split into N logical devices, as a real process.

  python -m tests.logical_cpus 2 launch.train --config=... --workdir=...

Mirrored strategies over several CPU devices need the split before TensorFlow starts its
runtime; the launchers themselves see one CPU device. Tests use this to kill and restart
a mirrored-over-2 run exactly as a user's command would run.
"""

import runpy
import sys

import tensorflow as tf


def main():
  count, module, *args = sys.argv[1:]
  tf.config.set_logical_device_configuration(
      tf.config.list_physical_devices("CPU")[0],
      [tf.config.LogicalDeviceConfiguration()] * int(count))
  sys.argv = [module, *args]
  runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
  main()
