"""precision=auto: what it picks for each kind of hardware, and what a run records.

GPUs and TPUs can't run here: `precision.choose` is a function of the devices, their
compute capability and the CPU flags, so those branches are tested with device records
as TensorFlow lists them (untested on real hardware). The CPU branch also runs for real.
"""

import os
import subprocess

from absl.testing import absltest
from absl.testing import parameterized
import tensorflow as tf

from tests import testutil
from kmodels import precision, trainers, training

_CPU = tf.config.PhysicalDevice("/physical_device:CPU:0", "CPU")


def _gpus(count):
  return [tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(count)]


class ChooseTest(parameterized.TestCase):

  @parameterized.parameters(((8, 0), "mixed_bfloat16"), ((9, 0), "mixed_bfloat16"),
                            ((7, 5), "mixed_float16"), ((7, 0), "mixed_float16"),
                            ((6, 1), "float32"))
  def test_gpus_by_compute_capability(self, capability, expected):
    choice = precision.choose([_CPU, *_gpus(2)], flags=set(), gpu_capability=lambda gpu: capability)
    self.assertEqual(choice.precision, expected)
    self.assertIn(f"{capability[0]}.{capability[1]}", choice.reason)

  def test_the_oldest_gpu_decides(self):
    capabilities = iter([(8, 0), (7, 5)])
    choice = precision.choose(_gpus(2), flags=set(), gpu_capability=lambda gpu: next(capabilities))
    self.assertEqual(choice.precision, "mixed_float16")

  def test_tpu(self):
    tpu = tf.config.PhysicalDevice("/physical_device:TPU:0", "TPU")
    self.assertEqual(precision.choose([_CPU, tpu], flags=set()).precision, "mixed_bfloat16")

  @parameterized.parameters(({"avx512f", "avx512_bf16"}, "mixed_bfloat16"),
                            ({"amx_bf16", "amx_tile"}, "mixed_bfloat16"),
                            ({"avx512f", "avx2"}, "float32"))
  def test_cpus_by_flags(self, flags, expected):
    self.assertEqual(precision.choose([_CPU], flags=flags).precision, expected)

  @parameterized.parameters((True, "mixed_bfloat16"), (False, "float32"))
  def test_unreadable_flags_fall_back_to_a_probe(self, faster, expected):
    choice = precision.choose([_CPU], probe=lambda: faster,
                              cpuinfo_path="/nonexistent/cpuinfo")  # as in some containers
    self.assertEqual(choice.precision, expected)
    self.assertIn("probe", choice.reason)

  def test_the_probe_runs(self):
    self.assertIsInstance(precision.bf16_matmul_is_faster(size=64, repeats=1), bool)

  def test_flags_are_the_kernels_own(self):
    grep = subprocess.run(["grep", "-o", r"avx512_bf16\|amx_bf16", "/proc/cpuinfo"],
                          capture_output=True,
                          text=True)
    native = set(grep.stdout.split())
    self.assertEqual(native, set(precision.NATIVE_BF16_CPU_FLAGS) & precision.cpu_flags())
    expected = "mixed_bfloat16" if native else "float32"
    self.assertEqual(precision.choose().precision, expected)

  def test_estimators_and_explicit_values(self):
    table = trainers.TABLE
    self.assertEqual(precision.resolve("auto", table["estimator"]), "float32")
    self.assertEqual(precision.resolve("auto", table["keras_estimator"]), "float32")
    self.assertEqual(precision.resolve("mixed_float16", table["fit"]), "mixed_float16")


class RunRecordsTest(absltest.TestCase):

  def test_a_run_with_auto_records_the_choice_and_the_request(self):
    workdir = self.create_tempdir().full_path
    config = testutil.tiny_config(dataset__source="synthetic", precision="auto")
    metrics = training.train_and_evaluate(config, workdir)
    expected = precision.choose().precision
    self.assertEqual((metrics["precision"], metrics["precision_requested"]), (expected, "auto"))
    recorded = testutil.read_json(os.path.join(workdir, "config.json"), None)
    self.assertEqual((recorded["precision"], recorded["precision_requested"]), (expected, "auto"))
    self.assertEqual(config.precision, "auto")  # the caller's config is left as it was
    card = testutil.read_json(os.path.join(testutil.export_of(workdir), "model_card.json"), None)
    self.assertEqual(card["training_precision"], expected)


if __name__ == "__main__":
  absltest.main()
