"""The launchers as users run them: real processes, real exit codes, real kill -9."""

import ast
import glob
import gzip
import json
import os

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil


class TrainLauncherTest(parameterized.TestCase):

  def test_synthetic_run_with_overrides_writes_outputs(self):
    workdir = self.create_tempdir().full_path
    proc = testutil.run_launcher("train", "--config=configs/base.py", f"--workdir={workdir}",
                                 "--config.dataset.source=synthetic",
                                 "--config.dataset.synthetic_train_examples=64",
                                 "--config.train.batch_size=16", "--config.train.epochs=2",
                                 "--config.model.name=mlp")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(workdir, "config.json")) as f:
      config = json.load(f)
    self.assertEqual((config["train"]["epochs"], config["model"]["name"]), (2, "mlp"))
    with open(os.path.join(workdir, "metrics.json")) as f:
      self.assertLen(json.load(f)["history"], 2)
    for name in ("curves.png", "classification_report.txt", "export/1/saved_model.pb"):
      self.assertTrue(os.path.exists(os.path.join(workdir, name)), name)
    self.assertIn("Test accuracy", proc.stderr)

  @parameterized.named_parameters(
      ("unknown_model", ["--config.model.name=resnet999"], ["minivggnet (subclassed)"]),
      ("unknown_key", ["--config.train.epoch=3"], ["'epoch'", 'Did you mean "epochs"']),
      ("wrong_type", ["--config.train.epochs=abc"], ["--config.train.epochs=abc"]),
      ("zero_batch", ["--config.train.batch_size=0"], ["train.batch_size must be a positive"]),
      ("missing_config", ["--config=configs/no_such_config.py"], ["no_such_config.py"]),
  )
  def test_user_mistake_is_one_clear_message(self, args, fragments):
    proc = testutil.call_launcher("train", "--config=configs/base.py",
                                  f"--workdir={self.create_tempdir().full_path}", *args)
    testutil.assert_user_error(self, proc, *fragments)

  @parameterized.named_parameters(
      ("raises", "  raise ValueError('my own bug')\n", "raised ValueError: my own bug at line 4"),
      ("reads_a_missing_key", "  config.train.lr_typo += 1\n  return config\n",
       "raised AttributeError"))
  def test_a_bug_in_the_config_file_names_its_line_not_an_override(self, body, fragment):
    path = self.create_tempfile(
        "mine.py", "from configs import base\ndef get_config():\n"
        "  config = base.get_config()\n" + body).full_path
    proc = testutil.call_launcher("train", f"--config={path}", "--workdir=/tmp/unused")
    testutil.assert_user_error(self, proc, fragment, f"the config file {path}",
                               "bug in the config file itself")
    self.assertNotIn("in an override:", proc.stderr)

  @parameterized.named_parameters(
      ("train", "train", ["--config=configs/base.py", "--workdir=/tmp/unused"]),
      ("compare", "compare", ["--config=configs/compare_fashion_mnist.py", "--workdir=/tmp/unused"
                             ]),
      ("benchmark", "benchmark", ["--config=configs/base.py", "--workdir=/tmp/unused"]),
      ("prepare_data", "prepare_data", ["--dataset=mnist", "--archive_dir=/tmp/unused"]),
      ("evaluate", "evaluate", ["--workdir=/tmp/unused"]))
  def test_stray_positional_arguments_are_exit_2(self, launcher, flags):
    # A real process per launcher: its exit status and stderr as a shell sees them. Other
    # user mistakes are checked in this process (testutil.call_launcher).
    proc = testutil.run_launcher(launcher, *flags, "stray")
    testutil.assert_user_error(self, proc, "unexpected arguments: stray")

  def test_config_with_syntax_error(self):
    path = self.create_tempfile("broken.py", "def get_config(:\n").full_path
    proc = testutil.call_launcher("train", f"--config={path}", "--workdir=/tmp/unused")
    testutil.assert_user_error(self, proc, "SyntaxError")

  def test_unprepared_dataset_points_to_prepare_data(self):
    proc = testutil.call_launcher("train", "--config=configs/fashion_mnist_quickstart.py",
                                  f"--workdir={self.create_tempdir().full_path}",
                                  f"--config.dataset.data_dir={self.create_tempdir().full_path}",
                                  "--config.dataset.download=False")
    testutil.assert_user_error(self, proc, "launch.prepare_data --dataset=fashion_mnist",
                               "dataset-fashion-mnist")


class LauncherFlagValuesTest(parameterized.TestCase):
  """Every number a launcher takes as a flag, and every empty value, is refused while flags
  are parsed."""

  @parameterized.named_parameters(
      ("top_k_zero", "predict", ["--model=/tmp/unused", "--top_k=0"], "--top_k=0"),
      ("negative_image_count", "write_image_folder", ["--out=/tmp/unused", "--train_examples=-1"
                                                     ], "--train_examples=-1"),
      ("zero_steps", "benchmark",
       ["--config=configs/base.py", "--workdir=/tmp/unused", "--steps=0"], "--steps=0"),
      ("export_version_zero", "export", ["--workdir=/tmp/unused", "--version=0"], "--version=0"),
      ("fraction_above_one", "prepare_data", ["--dataset=image_folder", "--max_bad_fraction=2"
                                             ], "--max_bad_fraction=2"),
      ("fraction_nan", "prepare_data", ["--dataset=image_folder", "--max_bad_fraction=nan"
                                       ], "must be a number in the range [0, 1]"),
      ("target_above_one", "plain_keras", ["--config=configs/base.py", "--target_accuracy=1.5"
                                          ], "--target_accuracy=1.5"),
      ("target_nan", "plain_keras", ["--config=configs/base.py", "--target_accuracy=nan"
                                    ], "--target_accuracy=nan"),
      ("empty_workdir", "train", ["--config=configs/base.py", "--workdir="], "--workdir is empty"),
      ("empty_list", "data_service", ["--dispatcher", "--port=5000", "--worker_addresses="
                                     ], "--worker_addresses is empty"),
  )
  def test_a_value_out_of_range_is_one_clear_message(self, launcher, args, fragment):
    testutil.assert_user_error(self, testutil.call_launcher(launcher, *args), fragment)

  def test_every_launcher_bounds_its_numbers_and_parses_flags_as_the_others(self):
    # The rule behind the cases above, over every launcher's source (importing them all
    # into one process would define their shared flag names twice).
    broken = []
    for path in sorted(glob.glob(os.path.join(testutil.REPO_ROOT, "launch", "*.py"))):
      with open(path) as f:
        tree = ast.parse(f.read())
      for call in (node for node in ast.walk(tree) if isinstance(node, ast.Call)):
        name = ast.unparse(call.func)
        keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
        where = f"{os.path.basename(path)}:{call.lineno} {name}"
        if name == "flags.DEFINE_integer" and "lower_bound" not in keywords:
          broken.append(f"{where} without lower_bound")
        if name == "flags.DEFINE_float" and not path.endswith("common.py"):
          broken.append(f"{where}: use common.define_fraction (absl's bounds pass NaN)")
        if name == "app.run" and keywords.get("flags_parser") != "common.parse_flags":
          broken.append(f"{where} without flags_parser=common.parse_flags (flag errors exit 2)")
    self.assertEqual(broken, [])


class PrepareDataLauncherTest(absltest.TestCase):

  def test_tiny_cifar_archive_prepares_and_trains_through_real_builder(self):
    archive_dir, data_dir = self.create_tempdir().full_path, self.create_tempdir().full_path
    testutil.write_cifar10_archive(os.path.join(archive_dir, "cifar-10-binary.tar.gz"))
    proc = testutil.run_launcher("prepare_data", "--dataset=cifar10",
                                 f"--archive_dir={archive_dir}", f"--data_dir={data_dir}")
    if testutil.TFDS_VERIFIES_ARCHIVES:
      testutil.assert_user_error(self, proc, testutil.CHECKSUM_MESSAGE)
      self.skipTest("this tfds rejects test-made archives (checked above); the full lane "
                    "trains through the real cifar10 builder")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("train: 20, test: 6", proc.stderr)

    workdir = self.create_tempdir().full_path
    proc = testutil.run_launcher("train", "--config=configs/cifar_shallownet.py",
                                 f"--workdir={workdir}", f"--config.dataset.data_dir={data_dir}",
                                 "--config.train.batch_size=4", "--config.train.epochs=1",
                                 "--config.train.steps_per_epoch=1")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    with open(os.path.join(workdir, "classification_report.txt")) as f:
      report = f.read()
    self.assertIn("airplane", report)  # label names from the archive's batches.meta.txt
    self.assertRegex(report, r"accuracy\s+[\d.]+\s+6\n")

  def test_damaged_archives_under_the_expected_names_are_one_message(self):
    archive_dir = self.create_tempdir().full_path
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
      with gzip.open(os.path.join(archive_dir, name), "wb"):
        pass  # an empty archive: right name, nothing inside
    proc = testutil.call_launcher("prepare_data", "--dataset=fashion_mnist",
                                  f"--archive_dir={archive_dir}",
                                  f"--data_dir={self.create_tempdir().full_path}")
    testutil.assert_user_error(
        self, proc, testutil.CHECKSUM_MESSAGE
        if testutil.TFDS_VERIFIES_ARCHIVES else "could not be read as its archives")

  def test_archive_dir_with_wrong_files_lists_expected_names(self):
    archive_dir = self.create_tempdir().full_path
    self.create_tempfile(os.path.join(archive_dir, "cifar-10-python.tar.gz"))
    proc = testutil.call_launcher("prepare_data", "--dataset=cifar10",
                                  f"--archive_dir={archive_dir}")
    testutil.assert_user_error(self, proc, "lacks cifar-10-binary.tar.gz",
                               "found: cifar-10-python.tar.gz")


if __name__ == "__main__":
  absltest.main()
