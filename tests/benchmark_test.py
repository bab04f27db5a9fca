"""launch.benchmark: every measurement is there and sane; FLOPs match a hand count."""

import json
import os
import time

from absl.testing import absltest

from tests import testutil
import tensorflow as tf

from kmodels import models, precision, training
from kmodels.tools import benchmark

_ENCLOSING = {"Process", "ParallelFor", "DoCompute"}  # executor events, not ops


class BenchmarkTest(absltest.TestCase):

  def test_mlp_forward_flops_match_the_hand_count(self):
    model = models.build_model("mlp", (28, 28, 1), 10)
    matmuls = 2 * (784 * 256 + 256 * 10)  # multiply-adds of the two Dense layers
    flops = benchmark.forward_flops_per_image(model, (28, 28, 1))
    self.assertBetween(flops, matmuls, matmuls * 1.05)  # + biases, ReLU, softmax

  def test_matmul_peak_is_measured(self):
    self.assertGreater(benchmark.matmul_peak_flops(tf.float32, size=256, seconds=0.2), 1e8)

  def test_the_reference_is_held_to_the_float32_peak_and_kmodels_to_its_own(self):
    # 1 GFLOP per image forward, so 3 GFLOP per trained image: 50 img/s is 150 GFLOP/s.
    efficiency = benchmark.reference_efficiency(flops=1e9,
                                                reference_images_per_second=50,
                                                peak_gflops={
                                                    "float32": 200.0,
                                                    "bfloat16": 400.0
                                                },
                                                peak_dtype="bfloat16")
    self.assertAlmostEqual(efficiency["reference_achieved_gflops"], 150.0)
    self.assertAlmostEqual(efficiency["reference_fraction_of_peak"], 0.75)
    self.assertAlmostEqual(efficiency["train_speedup_ceiling"], 400.0 / 150.0)

  def test_launcher_writes_every_measurement(self):
    workdir = self.create_tempdir().full_path
    proc = testutil.run_launcher("benchmark", "--config=configs/base.py", f"--workdir={workdir}",
                                 "--config.dataset.source=synthetic",
                                 "--config.dataset.name=cifar10",
                                 "--config.dataset.augment.enabled=True",
                                 "--config.train.batch_size=16", "--steps=5",
                                 "--pipeline_batches=2", "--op_profile")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(workdir, "benchmark.json")) as f:
      results = json.load(f)
    for key in ("train_images_per_second", "pipeline_images_per_second",
                "reference_train_images_per_second", "reference_pipeline_images_per_second",
                "time_to_first_step_seconds", "forward_flops_per_image", "peak_rss_mb",
                "fraction_of_peak", "train_speedup", "pipeline_speedup",
                "reference_fraction_of_peak", "train_speedup_ceiling"):
      self.assertGreater(results[key], 0, key)
    # The ratio measured is the ceiling's share that kmodels reached.
    self.assertAlmostEqual(results["train_speedup"],
                           results["train_speedup_ceiling"] * results["fraction_of_peak"],
                           delta=1e-6 * results["train_speedup"])
    self.assertIn("train_speedup", proc.stdout)
    # base.py asks for precision=auto: the launcher says what it chose and records both.
    self.assertEqual(results["precision_requested"], "auto")
    self.assertEqual(results["precision"], precision.choose().precision)
    self.assertIn(f"precision=auto -> {results['precision']}", proc.stderr)
    # --op_profile: the shares are printed and saved, the trace is kept for TensorBoard.
    self.assertIn("op_time_shares[", proc.stdout)
    self.assertAlmostEqual(sum(results["op_time_shares"].values()), 1.0, places=6)
    self.assertTrue(os.listdir(os.path.join(workdir, "op_profile")))

  def test_an_imagenet_architecture_is_held_to_keras_own_model_on_the_same_batch(self):
    config = testutil.tiny_config(dataset__source="synthetic",
                                  dataset__name="cifar10",
                                  model__name="mobilenet_v2",
                                  train__batch_size=4)
    results = benchmark.run(config,
                            steps=2,
                            pipeline_batches=2,
                            synthetic_batch=True,
                            with_reference=True,
                            process_start=time.time())
    self.assertStartsWith(results["reference"], "tf.keras.applications + model.fit")
    self.assertGreater(results["reference_train_images_per_second"], 0)
    self.assertAlmostEqual(
        results["train_speedup"],
        results["train_images_per_second"] / results["reference_train_images_per_second"])
    self.assertNotIn("pipeline_speedup", results)  # the tutorial's pipeline is not the reference
    self.assertGreater(results["forward_flops_per_image"], 1e6)

  def test_input_only_measures_the_pipeline_against_decoding_the_same_files(self):
    image_dir, workdir = self.create_tempdir().full_path, self.create_tempdir().full_path
    testutil.write_image_folder(image_dir, per_class=12)
    proc = testutil.call_launcher("benchmark", "--input_only",
                                  *testutil.image_folder_flags(image_dir), f"--workdir={workdir}",
                                  "--config.dataset.cache=none", "--config.train.batch_size=8",
                                  "--pipeline_batches=10")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(workdir, "benchmark.json")) as f:
      results = json.load(f)
    for key in ("input_images_per_second", "decode_limit_images_per_second", "peak_rss_mb"):
      self.assertGreater(results[key], 0, key)
    self.assertAlmostEqual(
        results["input_fraction_of_decode_limit"],
        results["input_images_per_second"] / results["decode_limit_images_per_second"])
    self.assertEqual(36, results["train_examples"])
    self.assertIn("input_fraction_of_decode_limit", proc.stdout)
    self.assertNotIn("train_images_per_second", results)  # nothing was trained

  def test_input_only_on_decoded_pixels_says_what_it_needs(self):
    proc = testutil.call_launcher("benchmark", "--input_only", "--config=configs/base.py",
                                  "--workdir=/tmp/unused", "--config.dataset.source=synthetic",
                                  "--config.dataset.name=cifar10")
    testutil.assert_user_error(self, proc, "--input_only measures decoding")

  def test_custom_loop_trainer_is_measured_with_its_own_step(self):
    config = testutil.tiny_config(dataset__source="synthetic",
                                  trainer="custom_loop",
                                  train__steps_per_execution=2)
    results = benchmark.run(config,
                            steps=4,
                            pipeline_batches=2,
                            synthetic_batch=True,
                            with_reference=False,
                            process_start=time.time())
    self.assertEqual(results["trainer"], "custom_loop")
    self.assertGreater(results["train_images_per_second"], 0)
    self.assertGreater(results["time_to_first_step_seconds"], 0)

  def test_op_profile_names_the_op_types_a_step_spends_its_time_in(self):
    config = testutil.tiny_config(dataset__source="synthetic")
    results = benchmark.run(config,
                            steps=4,
                            pipeline_batches=2,
                            synthetic_batch=True,
                            with_reference=False,
                            process_start=time.time(),
                            op_profile_dir=self.create_tempdir().full_path)
    shares = results["op_time_shares"]
    self.assertAlmostEqual(sum(shares.values()), 1.0, places=6)
    # ShallowNet is one convolution and one Dense layer: their kernels must show up.
    self.assertTrue(any("Conv2D" in op for op in shares), shares)
    self.assertTrue(any("MatMul" in op for op in shares), shares)
    self.assertFalse(_ENCLOSING & set(shares), shares)

  def test_a_multi_device_config_is_measured_on_one_device_and_says_so(self):
    config = testutil.tiny_config(dataset__source="synthetic", distribution__strategy="mirrored")
    with self.assertLogs(level="WARNING") as logs:
      results = benchmark.run(config,
                              steps=2,
                              pipeline_batches=2,
                              synthetic_batch=True,
                              with_reference=False,
                              process_start=time.time())
    self.assertIn("measures one device: distribution.strategy='mirrored'", "".join(logs.output))
    self.assertGreater(results["train_images_per_second"], 0)

  def test_estimator_trainers_are_refused_with_where_to_look(self):
    proc = testutil.call_launcher("benchmark", "--config=configs/base.py",
                                  f"--workdir={self.create_tempdir().full_path}",
                                  "--config.trainer=estimator", "--config.model.name=mlp")
    testutil.assert_user_error(self, proc, "measures the Keras trainers", "launch.compare")


class WorkToAccuracyTest(absltest.TestCase):

  def test_a_runs_work_is_three_forward_passes_per_image_trained(self):
    workdir = self.create_tempdir().full_path
    config = testutil.tiny_config(dataset__source="synthetic", model__name="mlp", train__epochs=2)
    metrics = training.train_and_evaluate(config, workdir)
    proc = testutil.call_launcher("work_to_accuracy", f"--workdir={workdir}",
                                  f"--workdir={workdir}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    forward = benchmark.forward_flops_per_image(models.build_model("mlp", (28, 28, 1), 10),
                                                (28, 28, 1))
    images = 2 * 2 * 8  # epochs x steps x batch: the MLP has no BatchNorm to settle
    row = proc.stdout.splitlines()[1].split()
    self.assertEqual(row[1:4], ["mlp", f"{forward / 1e6:.2f}", str(images)])
    self.assertAlmostEqual(float(row[4]) / (3 * forward * images / 1e12), 1.0, places=3)
    self.assertEqual(row[5:], ["1.00", f"{metrics['test_accuracy']:.2%}"])

  def test_a_folder_without_a_run_is_one_line(self):
    proc = testutil.call_launcher("work_to_accuracy",
                                  f"--workdir={self.create_tempdir().full_path}")
    testutil.assert_user_error(self, proc, "holds no run")

  def test_damaged_or_missing_records_are_one_line_each(self):
    workdir = self.create_tempdir().full_path
    training.train_and_evaluate(
        testutil.tiny_config(dataset__source="synthetic", model__name="mlp"), workdir)
    card = os.path.join(workdir, "export", "1", "model_card.json")
    for path, content, message in ((card, "{cut", "model_card.json is damaged: not JSON"),
                                   (card, None, "has no export with a model card"),
                                   (os.path.join(workdir,
                                                 "metrics.json"), "[]", "holds no completed run"),
                                   (os.path.join(workdir,
                                                 "metrics.json"), "", "metrics.json is damaged"),
                                   (os.path.join(workdir,
                                                 "config.json"), "[1]", "is not a run's config")):
      if content is None:
        os.remove(path)
      else:
        with open(path, "w") as f:
          f.write(content)
      proc = testutil.call_launcher("work_to_accuracy", f"--workdir={workdir}")
      testutil.assert_user_error(self, proc, message)


class PeerPathsTest(absltest.TestCase):
  """launch.plain_keras: the peers' paths, to a target accuracy or for the whole run."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.folder = os.path.join(absltest.get_default_test_tmpdir(), "peer_paths_folder")
    testutil.write_image_folder(cls.folder, per_class=12)

  def _run(self, path, target=None):
    proc = testutil.call_launcher("plain_keras",
                                  *testutil.image_folder_flags(self.folder, image_size=12),
                                  "--config.model.name=mlp", "--config.train.batch_size=6",
                                  "--config.train.epochs=2", f"--path={path}",
                                  *([f"--target_accuracy={target}"] if target is not None else []))
    self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])

  def test_a_reached_target_stops_the_run_at_that_epoch(self):
    for path in ("plain", "tutorial"):
      result = self._run(path, 0.0)
      self.assertEqual(result["path"], path)
      self.assertLen(result["epochs"], 1)
      self.assertEqual(result["seconds_to_target"], result["epochs"][0]["seconds"])

  def test_without_a_target_it_trains_every_epoch_and_reports_none(self):
    # (A target above 1 is refused as a flag error: LauncherFlagValuesTest.)
    result = self._run("tutorial")
    self.assertEqual([e["epoch"] for e in result["epochs"]], [1, 2])
    self.assertLess(result["epochs"][0]["seconds"], result["epochs"][1]["seconds"])
    self.assertIsNone(result["seconds_to_target"])
    self.assertAlmostEqual(result["test_accuracy"], result["epochs"][-1]["test_accuracy"], places=5)


if __name__ == "__main__":
  absltest.main()
