"""Strategies from config, for real: MirroredStrategy over two logical CPU devices."""

import os

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil
import numpy as np
import tensorflow as tf

# Two logical CPUs must be configured before TensorFlow initializes its devices, which
# is why this module runs in its own process (tests/run_all.py).
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2)

from kmodels import distribute, training  # noqa: E402
from kmodels.errors import UserError  # noqa: E402


class DistributeTest(parameterized.TestCase):

  def test_mirrored_over_two_cpus_has_two_replicas(self):
    config = testutil.tiny_config(distribution__strategy="mirrored",
                                  distribution__devices="cpu:0,cpu:1")
    strategy = distribute.get_strategy(config.distribution)
    self.assertIsInstance(strategy, tf.distribute.MirroredStrategy)
    self.assertEqual(strategy.num_replicas_in_sync, 2)
    self.assertEqual(distribute.per_replica_batch_size(8, strategy), 4)

  def test_batch_not_divisible_by_replicas_says_what_to_use(self):
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with self.assertRaisesRegex(UserError, "7 does not divide by the 2 replicas.*batch_size=6"):
      distribute.per_replica_batch_size(7, strategy)

  def test_mirrored_is_made_once_per_process(self):
    config = testutil.tiny_config(distribution__strategy="mirrored",
                                  distribution__devices="cpu:0,cpu:1")
    self.assertIs(distribute.get_strategy(config.distribution),
                  distribute.get_strategy(config.distribution))

  def test_one_device_and_default(self):
    config = testutil.tiny_config(distribution__strategy="one_device",
                                  distribution__devices="cpu:1")
    strategy = distribute.get_strategy(config.distribution)
    self.assertEqual(strategy.extended.worker_devices,
                     ("/job:localhost/replica:0/task:0/device:CPU:1",))
    config.distribution.strategy = "default"
    self.assertIs(distribute.get_strategy(config.distribution), tf.distribute.get_strategy())

  @parameterized.parameters("fit", "custom_loop")
  def test_one_device_trains_and_resumes(self, trainer):
    # fit used to crash at the first step: BackupAndRestore refuses OneDeviceStrategy.
    config = testutil.tiny_config(dataset__source="synthetic",
                                  trainer=trainer,
                                  distribution__strategy="one_device",
                                  distribution__devices="cpu:1")
    workdir = self.create_tempdir().full_path
    training.train_and_evaluate(config, workdir)
    config.train.epochs = 2
    metrics = training.train_and_evaluate(config, workdir)
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2])
    self.assertEqual(metrics["status"], "completed")

  @parameterized.parameters((0, False, False, "default"), (1, False, False, "default"),
                            (2, False, False, "mirrored"), (8, False, False, "mirrored"),
                            (0, True, False, "tpu"), (0, False, True, "tpu"),
                            (4, True, False, "tpu"))
  def test_auto_picks_by_devices(self, gpus, tpu_configured, tpu_attached, expected):
    # GPUs and TPUs can't run here: device records as TensorFlow lists them stand in
    # (untested on real hardware); the CPU branch runs for real below.
    devices = [tf.config.PhysicalDevice("/physical_device:CPU:0", "CPU")] + [
        tf.config.PhysicalDevice(f"/physical_device:GPU:{i}", "GPU") for i in range(gpus)
    ]
    name, reason = distribute.choose_strategy(devices, tpu_configured, tpu_attached)
    self.assertEqual(name, expected)
    self.assertTrue(reason)

  def test_auto_on_this_machine_is_the_default_strategy_and_says_why(self):
    config = testutil.tiny_config(distribution__strategy="auto")
    with self.assertLogs(level="INFO") as logs:
      strategy = distribute.get_strategy(config.distribution)
    self.assertIs(strategy, tf.distribute.get_strategy())
    self.assertTrue(
        any("strategy=auto -> default: no GPU or TPU" in l and "Devices found" in l
            for l in logs.output), logs.output)

  def test_mirrored_on_a_machine_with_one_device_runs_with_one_replica(self):
    # A process of its own: this module's process has two logical CPUs.
    proc = testutil.run_launcher("train", "--config=configs/base.py",
                                 "--config.dataset.source=synthetic",
                                 "--config.distribution.strategy=mirrored",
                                 "--config.model.name=mlp", "--config.train.steps_per_epoch=2",
                                 f"--workdir={self.create_tempdir().full_path}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("Strategy MirroredStrategy with 1 replica(s)", proc.stderr)
    self.assertIn("Test accuracy", proc.stderr)

  def test_unknown_device_is_a_user_error(self):
    config = testutil.tiny_config(distribution__strategy="mirrored",
                                  distribution__devices="cpu:0,gpu:7")
    with self.assertRaisesRegex(UserError, "no device /gpu:7 on this machine.*CPU:1"):
      distribute.get_strategy(config.distribution)

  def test_fit_under_mirrored_trains_and_evaluates(self):
    config = testutil.tiny_config(dataset__source="synthetic",
                                  train__epochs=2,
                                  distribution__strategy="mirrored",
                                  distribution__devices="cpu:0,cpu:1")
    metrics = training.train_and_evaluate(config, self.create_tempdir().full_path)
    self.assertLen(metrics["history"], 2)
    self.assertLess(metrics["history"][1]["loss"], 50.0)
    self.assertBetween(metrics["test_accuracy"], 0.0, 1.0)

  def _trained_weights(self, strategy, **overrides):
    config = testutil.tiny_config(
        dataset__source="synthetic",
        model__name="mlp",
        train__steps_per_epoch=3,
        train__epochs=1,
        train__optimizer__name="sgd",
        train__optimizer__learning_rate=0.1,
        distribution__strategy=strategy,
        distribution__devices=("cpu:0,cpu:1" if strategy == "mirrored" else None),
        **overrides)
    workdir = self.create_tempdir().full_path
    training.train_and_evaluate(config, workdir)
    return tf.keras.models.load_model(testutil.export_of(workdir)).get_weights()

  @parameterized.parameters(("fit", False), ("custom_loop", False), ("custom_loop", True))
  def test_mirrored_over_two_cpus_matches_one_device(self, trainer, xla):
    """Same global batch and seed: two replicas must learn exactly what one device does."""
    single = self._trained_weights("default", trainer=trainer, xla=xla)
    mirrored = self._trained_weights("mirrored", trainer=trainer, xla=xla)
    self.assertLen(mirrored, len(single))
    # A loss averaged per replica instead of over the global batch would double the step.
    for a, b in zip(single, mirrored):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

  def test_fit_with_xla_over_cpu_replicas_explains_the_alternative(self):
    config = testutil.tiny_config(dataset__source="synthetic",
                                  xla=True,
                                  distribution__strategy="mirrored",
                                  distribution__devices="cpu:0,cpu:1")
    with self.assertRaisesRegex(UserError, "trainer=custom_loop"):
      training.train_and_evaluate(config, self.create_tempdir().full_path)


class GpuReadinessTest(parameterized.TestCase):
  """What a GPU machine is told, from the facts it reports (no GPU here)."""

  def _tf_config(self, chief, worker, task_type="worker"):
    return {
        "cluster": {
            "chief": [chief],
            "worker": [worker]
        },
        "task": {
            "type": task_type,
            "index": 0
        }
    }

  @parameterized.parameters(
      ("auto", None, False),
      ("on", None, True),
      ("off", ("h0:1", "h0:2"), False),
      ("auto", ("h0:1", "h0:2"), True),  # chief and worker on one host
      ("auto", ("h0:1", "h1:2"), False))
  def test_memory_growth(self, setting, hosts, expected):
    tf_config = self._tf_config(*hosts) if hosts else None
    self.assertEqual(distribute.gpu_memory_growth_wanted(setting, tf_config), expected)

  def test_the_startup_line_names_each_gpu_and_the_cuda_tf_was_built_with(self):
    built = {"is_cuda_build": True, "cuda_version": "12.2", "cudnn_version": "8"}
    line = distribute.describe_gpus([("/physical_device:GPU:0", {
        "device_name": "NVIDIA A100-SXM4-40GB",
        "compute_capability": (8, 0)
    })], built)
    self.assertEqual(
        line, "GPUs: /physical_device:GPU:0 (NVIDIA A100-SXM4-40GB, compute "
        "capability 8.0) (TensorFlow built with CUDA 12.2, cuDNN 8).")
    self.assertIn("none visible", distribute.describe_gpus([], built))
    self.assertIn("built without CUDA", distribute.describe_gpus([], {}))

  def test_the_likely_cause_of_no_gpu(self):
    self.assertIn("pip install 'kmodels[gpu]'", distribute.no_gpu_reason({}, False))
    cuda = {"is_cuda_build": True}
    self.assertIn("no usable CUDA libraries", distribute.no_gpu_reason(cuda, True))
    self.assertIn("kmodels[gpu]", distribute.no_gpu_reason(cuda, True))
    self.assertIn("no /dev/nvidia0", distribute.no_gpu_reason(cuda, False))

  def test_an_explicit_gpu_request_without_a_gpu_says_why(self):
    config = testutil.tiny_config(distribution__strategy="mirrored", distribution__devices="gpu:0")
    with self.assertRaisesRegex(UserError, "no device /gpu:0 on this machine.*TensorFlow "
                                "sees no GPU: "):
      distribute.get_strategy(config.distribution)
    with self.assertLogs(level="INFO") as logs:
      distribute.configure_gpus(config.distribution)
    self.assertIn("GPUs: none visible (TensorFlow built", "\n".join(logs.output))


class SlurmStepTest(parameterized.TestCase):
  """A Slurm step's variables as srun sets them, and damaged the ways a stranger might."""

  _STEP = {
      "SLURM_PROCID": "1",
      "SLURM_STEP_NUM_TASKS": "5",
      "SLURM_STEP_TASKS_PER_NODE": "2(x2),1",
      "SLURM_STEP_NODELIST": "n[1-3]"
  }

  def test_what_srun_sets_is_read(self):
    self.assertEqual(distribute.slurm_tasks_per_node(self._STEP), 2)
    self.assertEqual(distribute.cluster_source("auto", self._STEP), "slurm")
    self.assertEqual(distribute.cluster_source("auto", {
        **self._STEP, "TF_CONFIG": "{}"
    }), "tf_config")

  @parameterized.parameters(("SLURM_PROCID", ""), ("SLURM_PROCID", "x"), ("SLURM_PROCID", "-1"),
                            ("SLURM_PROCID", "5"), ("SLURM_STEP_TASKS_PER_NODE", ""),
                            ("SLURM_STEP_TASKS_PER_NODE", "two"),
                            ("SLURM_STEP_TASKS_PER_NODE", "0"), ("SLURM_STEP_NUM_TASKS", "0"),
                            ("SLURM_STEP_NUM_TASKS", "many"))
  def test_a_damaged_variable_is_named(self, name, value):
    with self.assertRaisesRegex(UserError, f"Slurm's {name}={value!r} is not"):
      distribute.slurm_tasks_per_node({**self._STEP, name: value})


class TfConfigTest(parameterized.TestCase):

  def _read(self, value):
    with absltest.mock.patch.dict(os.environ, {"TF_CONFIG": value}):
      return distribute.read_tf_config()

  def test_valid_and_unset(self):
    tf_config = self._read('{"cluster": {"worker": ["a:1", "b:2"]}, '
                           '"task": {"type": "worker", "index": 1}}')
    self.assertEqual(tf_config["task"]["index"], 1)
    self.assertIsNone(self._read(""))

  @parameterized.parameters(
      ("{not json", "not valid JSON"),
      ('{"cluster": {"worker": ["a:1"]}}', "needs a 'cluster' and a 'task'"),
      ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
       "task type 'chief' is not in its cluster"),
      ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}',
       "index 3 is out of range"),
      ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}',
       "list of 'host:port' strings"),
  )
  def test_malformed_tf_config_is_explained(self, value, message):
    with self.assertRaisesRegex(UserError, message):
      self._read(value)


if __name__ == "__main__":
  absltest.main()
