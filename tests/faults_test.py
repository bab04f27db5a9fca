"""Faults for real; after each one nothing learned is lost.

- SIGTERM to a real `launch.train` process: it checkpoints the step it is at and exits
  143; the same command resumes there and ends with the weights of an uninterrupted run
  (deterministic ops, same seed, same data), for fit and the custom loop.
- A batch that overflows the loss: TrainingDiverged names the epoch and step; the last
  good checkpoint and the history so far are kept. A batch whose float16 gradients
  overflow is skipped by loss scaling, not reported.
- SIGKILL while a checkpoint is being written: the previous one stays in charge and the
  rerun resumes from it.
- A truncated newest checkpoint is set aside for the one before; a truncated dataset
  shard, labels beyond the dataset's declared classes, a full disk (a real tmpfs) and a
  workdir of another experiment end with a message.
- SIGTERM to one worker of a multi-worker job: tests/multi_worker_test.py.
"""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from unittest import mock

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tests import testutil
from kmodels import checkpoints, data, trainers, training
from kmodels.data import preparation
from kmodels.errors import TrainingDiverged, UserError

# The SIGTERM is sent when epoch 1 is in history.json: it lands at that epoch's end or in
# epoch 2, and the resume must start right after the step the stop reports, either way.
_STEPS_PER_EPOCH = 48  # a multiple of steps_per_execution (3)
_RUN_FLAGS = (
    "--config=configs/base.py",
    "--config.dataset.source=synthetic",
    "--config.dataset.synthetic_train_examples=512",
    "--config.dataset.synthetic_eval_examples=64",
    "--config.dataset.augment.enabled=True",
    "--config.train.batch_size=16",
    f"--config.train.steps_per_epoch={_STEPS_PER_EPOCH}",
    "--config.train.epochs=3",
    # Several steps per call: the checkpoint must hold the call's last step.
    "--config.train.steps_per_execution=3",
    "--config.train.deterministic=True")
_FINGERPRINT = re.compile(r"Weights fingerprint \(sum of \|w\|\): ([0-9.e+-]+)")


def _fingerprint(output):
  return float(_FINGERPRINT.findall(output)[-1])


def _launch(workdir, trainer, flags=_RUN_FLAGS):
  env = dict(os.environ, PYTHONPATH=testutil.REPO_ROOT)
  return subprocess.Popen([
      sys.executable, "-m", "launch.train", *flags, f"--config.trainer={trainer}",
      f"--workdir={workdir}"
  ],
                          cwd=testutil.REPO_ROOT,
                          env=env,
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True)


def _wait_for_epochs(workdir, epochs, process, timeout=300):
  history = os.path.join(workdir, "history.json")
  deadline = time.time() + timeout
  while len(testutil.read_json(history, [])) < epochs:
    if process.poll() is not None or time.time() > deadline:
      raise AssertionError("the run ended or stalled before epoch %d:\n%s" %
                           (epochs, process.communicate()[0][-3000:]))
    time.sleep(0.05)


class SigtermTest(parameterized.TestCase):

  @parameterized.parameters("fit", "custom_loop", "estimator")
  def test_sigterm_checkpoints_the_step_and_the_rerun_ends_like_an_unbroken_run(self, trainer):
    if trainer == "estimator" and not testutil.HAS_ESTIMATOR:
      self.skipTest("tf.estimator exists on the full lane only")
    # The run that gets the signal is a real process; the unbroken run and the resume run
    # the same launcher in this process (testutil.call_launcher).
    workdir = self.create_tempdir().full_path
    broken = _launch(workdir, trainer)
    _wait_for_epochs(workdir, 1, broken)
    broken.send_signal(signal.SIGTERM)  # at epoch 1's end or early in epoch 2
    stopped = broken.communicate(timeout=300)[0]
    self.assertEqual(broken.returncode, 143, stopped[-3000:])
    self.assertIn("kmodels: error: Stopped by SIGTERM after epoch", stopped)
    self.assertNotIn("Traceback", stopped)
    steps_done = int(re.search(r"\((\d+) steps in all\)", stopped).group(1))
    self.assertBetween(steps_done, _STEPS_PER_EPOCH, 3 * _STEPS_PER_EPOCH - 1)
    self.assertFalse(os.path.exists(os.path.join(workdir, ".lock")))

    resumed = testutil.call_launcher("train", *_RUN_FLAGS, f"--config.trainer={trainer}",
                                     f"--workdir={workdir}")
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    # Resumed right after the step the stop checkpointed (mid-epoch: not the epoch's start).
    self.assertEqual(testutil.resumed_step(resumed.stderr), steps_done)
    unbroken_dir = self.create_tempdir().full_path
    unbroken = testutil.call_launcher("train", *_RUN_FLAGS, f"--config.trainer={trainer}",
                                      f"--workdir={unbroken_dir}")
    self.assertEqual(unbroken.returncode, 0, unbroken.stderr[-3000:])
    if trainer != "estimator":  # the Keras trainers log their weights' fingerprint
      self.assertAlmostEqual(_fingerprint(resumed.stderr),
                             _fingerprint(unbroken.stderr),
                             delta=1e-6 * _fingerprint(unbroken.stderr))
    metrics = testutil.read_json(os.path.join(workdir, "metrics.json"), {})
    unbroken_metrics = testutil.read_json(os.path.join(unbroken_dir, "metrics.json"), {})
    self.assertAlmostEqual(metrics["test_loss"], unbroken_metrics["test_loss"], delta=1e-6)
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2, 3])


# With every piece of state a resume must restore beyond weights and slots: EMA weights,
# gradients accumulated but not yet applied (48 steps per epoch are 9 updates of 5 and 3
# steps pending at the epoch's checkpoint), and the augmentations' random draws.
_STATEFUL_RUN_FLAGS = (*(f for f in _RUN_FLAGS if not f.startswith("--config.train.epochs")),
                       "--config.train.epochs=4", "--config.train.optimizer.ema_momentum=0.9",
                       "--config.train.accumulate_steps=5",
                       "--config.dataset.augment.randaugment_ops=2",
                       "--config.dataset.augment.mixup_alpha=0.2",
                       "--config.dataset.augment.cutmix_alpha=1.0")


class SigkillTest(parameterized.TestCase):

  @parameterized.parameters("fit", "custom_loop")
  def test_after_sigkill_the_rerun_ends_with_the_unbroken_runs_ema_weights(self, trainer):
    workdir = self.create_tempdir().full_path
    broken = _launch(workdir, trainer, _STATEFUL_RUN_FLAGS)
    # Two epochs in history: the first one's checkpoint is surely written.
    _wait_for_epochs(workdir, 2, broken)
    broken.send_signal(signal.SIGKILL)  # no handler, no last checkpoint
    broken.communicate(timeout=300)
    self.assertEqual(broken.returncode, -signal.SIGKILL)

    resumed = testutil.call_launcher("train", *_STATEFUL_RUN_FLAGS, f"--config.trainer={trainer}",
                                     f"--workdir={workdir}")
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    # After epoch 1 or 2: 3 or 1 steps' gradients pending in the checkpoint.
    self.assertIn(testutil.resumed_step(resumed.stderr), (_STEPS_PER_EPOCH, 2 * _STEPS_PER_EPOCH))
    unbroken = testutil.call_launcher("train", *_STATEFUL_RUN_FLAGS, f"--config.trainer={trainer}",
                                      f"--workdir={self.create_tempdir().full_path}")
    self.assertEqual(unbroken.returncode, 0, unbroken.stderr[-3000:])
    # The weights a run ends with are its EMA weights (finalize_variable_values).
    self.assertAlmostEqual(_fingerprint(resumed.stderr),
                           _fingerprint(unbroken.stderr),
                           delta=1e-6 * _fingerprint(unbroken.stderr))


# Pixels this large overflow the first layer to inf, and inf - inf makes the loss NaN. (NaN
# pixels would not do: ReLU maps NaN to 0, so they never reach the loss.)
_HUGE = 1e38
# Pixels this large keep float16 activations and the loss finite, but their gradients times
# the initial loss scale (2**15) overflow float16.
_LARGE_FOR_FLOAT16 = 100.0


def _poisoned(datasets, bad_step, value=_HUGE):
  """`datasets` whose training batch number `bad_step` (0-based, global) is all `value`."""

  def make_train(input_context=None, start_step=0):
    ds = datasets.make_train(input_context, start_step).enumerate(start=start_step)
    return ds.map(lambda step, batch: (tf.where(step == bad_step, tf.fill(
        tf.shape(batch[0]), value), batch[0]), batch[1]))

  return datasets._replace(make_train=make_train)


def _checkpoint_dir(workdir, trainer):
  """Where `trainer` keeps its resume checkpoints (Keras' BackupAndRestore: a chief/ dir)."""
  return trainers.latest_checkpoints(testutil.tiny_config(trainer=trainer),
                                     os.path.join(workdir, "checkpoints"))


def _newest_checkpoint_value(workdir, trainer, suffix):
  """The value of the variable whose name ends with `suffix` in the newest checkpoint."""
  newest = tf.train.latest_checkpoint(_checkpoint_dir(workdir, trainer))
  names = [n for n, _ in tf.train.list_variables(newest) if n.endswith(suffix)]
  return tf.train.load_checkpoint(newest).get_tensor(names[0])


class DivergenceTest(parameterized.TestCase):

  @parameterized.parameters("fit", "custom_loop")
  def test_nan_loss_stops_with_epoch_and_step_and_keeps_the_good_epoch(self, trainer):
    config = testutil.tiny_config(dataset__source="synthetic",
                                  train__epochs=3,
                                  train__steps_per_epoch=4,
                                  trainer=trainer)
    datasets = data.load(config.dataset, config.train.batch_size, config.train.seed)
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(
        TrainingDiverged, r"loss became (nan|inf) at epoch 2, step 3\. "
        r"Likely causes: a learning rate too high"):
      training.train_and_evaluate(config, workdir, datasets=_poisoned(datasets, 4 + 2))
    metrics = testutil.read_json(os.path.join(workdir, "metrics.json"), {})
    self.assertEqual(metrics["status"], "diverged")
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1])
    # The newest checkpoint is the last good epoch's: one resume function reads either
    # trainer's layout.
    self.assertEqual(checkpoints.resume_step(_checkpoint_dir(workdir, trainer), 4), 4)
    latest = tf.train.latest_checkpoint(_checkpoint_dir(workdir, trainer))
    reader = tf.train.load_checkpoint(latest)
    saved = [
        reader.get_tensor(name)
        for name, _ in tf.train.list_variables(latest)
        if name.startswith("model/")
    ]
    floats = [w for w in saved if w.dtype.kind == "f"]
    self.assertTrue(floats)
    self.assertTrue(all(np.all(np.isfinite(w)) for w in floats))
    self.assertFalse(os.path.exists(os.path.join(workdir, ".lock")))

  @parameterized.parameters("fit", "custom_loop")
  def test_float16_gradient_overflow_is_left_to_loss_scaling(self, trainer):
    config = testutil.tiny_config(dataset__source="synthetic",
                                  train__epochs=2,
                                  train__steps_per_epoch=4,
                                  trainer=trainer,
                                  precision="mixed_float16")
    datasets = data.load(config.dataset, config.train.batch_size, config.train.seed)
    workdir = self.create_tempdir().full_path
    metrics = training.train_and_evaluate(config,
                                          workdir,
                                          datasets=_poisoned(datasets, 5, _LARGE_FOR_FLOAT16))
    self.assertEqual(metrics["status"], "completed")
    self.assertTrue(all(np.isfinite(h["loss"]) for h in metrics["history"]))
    # The overflowing step was skipped and the scale halved (it starts at 2**15).
    self.assertEqual(
        _newest_checkpoint_value(workdir, trainer,
                                 "loss_scale/current_loss_scale/.ATTRIBUTES/VARIABLE_VALUE"), 2**14)

  def test_launcher_exits_3_with_the_message(self):
    workdir = self.create_tempdir().full_path
    proc = testutil.run_launcher("train", "--config=configs/base.py",
                                 "--config.dataset.source=synthetic",
                                 "--config.train.optimizer.name=sgd",
                                 "--config.train.optimizer.learning_rate=1e30",
                                 "--config.train.steps_per_epoch=3", f"--workdir={workdir}")
    self.assertEqual(proc.returncode, 3, proc.stderr[-3000:])
    self.assertIn("kmodels: error: Training diverged", proc.stderr)
    self.assertNotIn("Traceback", proc.stderr)


# Epochs of two steps, each ending in a checkpoint. No dropout: its random state is not
# checkpointed, so the resumed weights would differ from the unbroken run's.
_SAVE_OFTEN_STEPS = 2
_SAVE_OFTEN_EPOCHS = 4
_SAVE_OFTEN_FLAGS = ("--config=configs/base.py", "--config.dataset.source=synthetic",
                     "--config.dataset.name=mnist", "--config.model.name=mlp",
                     "--config.train.batch_size=8",
                     f"--config.train.steps_per_epoch={_SAVE_OFTEN_STEPS}",
                     f"--config.train.epochs={_SAVE_OFTEN_EPOCHS}",
                     "--config.dataset.synthetic_eval_examples=8",
                     "--config.train.deterministic=True")

# `launch.train` whose process stops itself (SIGSTOP) in the middle of a save: TensorFlow
# has written the save's shards into ckpt-N_temp/ and is about to merge them into ckpt-N,
# and an earlier checkpoint in that directory is committed (named in its `checkpoint`
# state file). The test kills it there: mid-save every time, no race with a poll loop.
_STOPS_MID_SAVE = """
import os, runpy, signal, sys
from tensorflow.python.ops import gen_io_ops

merge, directory = gen_io_ops.merge_v2_checkpoints, os.environ["STOP_MID_SAVE_IN"]

def merge_after_a_stop(checkpoint_prefixes, destination_prefix, *args, **kwargs):
  prefix = destination_prefix
  prefix = prefix if isinstance(prefix, str) else prefix.numpy().decode()
  if (os.path.dirname(prefix) == directory
      and os.path.exists(os.path.join(directory, "checkpoint"))):
    os.kill(os.getpid(), signal.SIGSTOP)
  return merge(checkpoint_prefixes, destination_prefix, *args, **kwargs)

gen_io_ops.merge_v2_checkpoints = merge_after_a_stop
sys.argv[0] = "launch.train"
runpy.run_module("launch.train", run_name="__main__", alter_sys=True)
"""


def _kill_during_a_save(workdir, trainer):
  """Runs training until it stops itself mid-save (above), SIGKILLs it there.

  Returns the names in its checkpoint directory at the kill.
  """
  directory = _checkpoint_dir(workdir, trainer)
  log_path = os.path.join(os.path.dirname(workdir), f"{os.path.basename(workdir)}-killed.log")
  with open(log_path, "w") as log:  # a file, not a pipe nobody reads while it runs
    process = subprocess.Popen([
        sys.executable, "-c", _STOPS_MID_SAVE, *_SAVE_OFTEN_FLAGS, f"--config.trainer={trainer}",
        f"--workdir={workdir}"
    ],
                               cwd=testutil.REPO_ROOT,
                               stdout=log,
                               stderr=subprocess.STDOUT,
                               env=dict(os.environ,
                                        PYTHONPATH=testutil.REPO_ROOT,
                                        STOP_MID_SAVE_IN=directory))
  _, status = os.waitpid(process.pid, os.WUNTRACED)  # until it stops (or ends)
  if not os.WIFSTOPPED(status):
    raise AssertionError("the run ended without stopping in a save:\n" +
                         testutil.read_text(log_path)[-3000:])
  names = sorted(os.listdir(directory))
  process.kill()
  process.wait()
  return names


class KillDuringSaveTest(parameterized.TestCase):

  @parameterized.parameters("fit", "custom_loop")
  def test_a_kill_during_a_save_leaves_the_previous_checkpoint_in_charge(self, trainer):
    workdir = self.create_tempdir().full_path
    directory = _checkpoint_dir(workdir, trainer)
    names_at_the_kill = _kill_during_a_save(workdir, trainer)
    partial = [n for n in os.listdir(directory) if n.endswith("_temp")]
    self.assertEqual(partial, [n for n in names_at_the_kill if n.endswith("_temp")])
    self.assertTrue(os.listdir(os.path.join(directory, partial[0])), "an empty _temp dir")
    # The state file still names a checkpoint that was complete before the kill.
    newest = tf.train.latest_checkpoint(directory)
    self.assertNotIn("_temp", newest)
    survivor_step = checkpoints.steps_done(newest, _SAVE_OFTEN_STEPS)  # reads it whole

    # The killed runs are processes; the resume and the unbroken run go in this process.
    resumed = testutil.call_launcher("train", *_SAVE_OFTEN_FLAGS, f"--config.trainer={trainer}",
                                     f"--workdir={workdir}")
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    self.assertEqual(testutil.resumed_step(resumed.stderr), survivor_step)
    self.assertNotIn("unreadable", resumed.stderr)
    metrics = testutil.read_json(os.path.join(workdir, "metrics.json"), {})
    self.assertEqual([h["epoch"] for h in metrics["history"]],
                     list(range(1, _SAVE_OFTEN_EPOCHS + 1)))
    unbroken = testutil.call_launcher("train", *_SAVE_OFTEN_FLAGS, f"--config.trainer={trainer}",
                                      f"--workdir={self.create_tempdir().full_path}")
    self.assertEqual(unbroken.returncode, 0, unbroken.stderr[-3000:])
    self.assertAlmostEqual(_fingerprint(resumed.stderr),
                           _fingerprint(unbroken.stderr),
                           delta=1e-6 * _fingerprint(unbroken.stderr))


def _truncate_newest_checkpoint(directory):
  newest = tf.train.latest_checkpoint(directory)
  data_file = newest + ".data-00000-of-00001"
  with open(data_file, "r+b") as f:
    f.truncate(os.path.getsize(data_file) // 2)
  return newest


class UnreadableCheckpointTest(parameterized.TestCase):

  @parameterized.parameters("fit", "custom_loop")
  def test_a_truncated_newest_checkpoint_is_set_aside_for_the_one_before(self, trainer):
    config = testutil.tiny_config(dataset__source="synthetic", train__epochs=2, trainer=trainer)
    workdir = self.create_tempdir().full_path
    training.train_and_evaluate(config, workdir)
    truncated = _truncate_newest_checkpoint(_checkpoint_dir(workdir, trainer))

    with self.assertLogs(level="INFO") as logs:
      metrics = training.train_and_evaluate(config, workdir)
    log = "\n".join(logs.output)
    self.assertIn(f"Checkpoint {truncated} is unreadable", log)
    self.assertEqual(testutil.resumed_step(log), 2)  # the survivor: epoch 1's end
    self.assertEqual(metrics["status"], "completed")
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2])
    self.assertTrue(os.path.exists(truncated + ".index.unreadable"))

  def _two_checkpoints(self):
    directory = self.create_tempdir().full_path
    variable = tf.Variable(1.0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), directory,
                                         checkpoints.KEEP_CHECKPOINTS)
    for value in (2.0, 3.0):
      variable.assign(value)
      manager.save()
    return directory, variable, manager.checkpoints

  def test_the_survivor_is_adopted_and_the_next_save_keeps_it(self):
    directory, variable, (survivor, newest) = self._two_checkpoints()
    _truncate_newest_checkpoint(directory)
    self.assertEqual(checkpoints.newest_readable_checkpoint(directory), survivor)
    state = testutil.read_text(os.path.join(directory, "checkpoint"))
    self.assertNotIn(directory, state)  # relative paths: the directory may move
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=variable), directory,
                                         checkpoints.KEEP_CHECKPOINTS)
    self.assertEqual(manager.checkpoints, [survivor])
    manager.save(checkpoint_number=3)  # numbered as the trainers number theirs
    self.assertLen(manager.checkpoints, 2)
    self.assertEqual(manager.checkpoints[0], survivor)
    self.assertTrue(os.path.exists(survivor + ".index"))
    self.assertTrue(os.path.exists(newest + ".index.unreadable"))

  def test_a_transient_read_error_sets_nothing_aside(self):
    directory, _, (_, newest) = self._two_checkpoints()
    hiccup = tf.errors.UnavailableError(None, None, "connection reset")
    real_read, reads = checkpoints.read_every_tensor, []

    def hiccup_then_read(path):
      reads.append(path)
      if len(reads) == 1:
        raise hiccup
      return real_read(path)  # the retry reads the real checkpoint, whole

    with mock.patch.object(checkpoints, "read_every_tensor", side_effect=hiccup_then_read), \
         mock.patch.object(checkpoints.time, "sleep") as waits:
      self.assertEqual(checkpoints.newest_readable_checkpoint(directory), newest)
    self.assertEqual(reads, [newest, newest])
    self.assertEqual([c.args for c in waits.call_args_list], [(1,)])  # it backed off once
    with mock.patch.object(checkpoints, "read_every_tensor", side_effect=hiccup), \
         mock.patch.object(checkpoints.time, "sleep"):
      with self.assertRaisesRegex(UserError, "does not look like a damaged checkpoint"):
        checkpoints.newest_readable_checkpoint(directory)
    self.assertEqual(tf.train.latest_checkpoint(directory), newest)
    self.assertEqual(glob.glob(os.path.join(directory, "*.unreadable")), [])

  @parameterized.parameters("fit", "custom_loop")
  def test_a_moved_workdir_resumes(self, trainer):
    config = testutil.tiny_config(dataset__source="synthetic", trainer=trainer)
    first = os.path.join(self.create_tempdir().full_path, "run")
    training.train_and_evaluate(config, first)
    moved = os.path.join(self.create_tempdir().full_path, "moved")
    shutil.move(first, moved)
    config.train.epochs = 2
    metrics = training.train_and_evaluate(config, moved)
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2])
    self.assertFalse(metrics["history"][1]["includes_compile"] is None)
    self.assertEqual(len(glob.glob(os.path.join(moved, "history.json"))), 1)


def _prepared_dummy_mnist(data_dir):
  """Prepares tfds' DummyMnist in `data_dir`: a real builder writing real TFRecord shards,
  offline, on both lanes (a test-made CIFAR archive only prepares on the full lane)."""
  builder = tfds.testing.DummyMnist(data_dir=data_dir)
  builder.download_and_prepare()
  return builder.data_dir


def _copy_with_features(prepared_dir, data_dir, name, edit):
  """A copy of a prepared dataset, renamed `name`, its features.json changed by
  `edit(features)`: tfds reads it from its files, as it reads a dataset built by hand."""
  target = os.path.join(data_dir, name, os.path.basename(prepared_dir))
  os.makedirs(target)
  old_name = os.path.basename(os.path.dirname(prepared_dir))
  for file in os.listdir(prepared_dir):
    with open(os.path.join(prepared_dir, file)) as f:
      content = f.read() if file.endswith(".json") else None
    new_path = os.path.join(target, file.replace(old_name, name))
    if content is None:
      shutil.copy(os.path.join(prepared_dir, file), new_path)
      continue
    content = json.loads(content.replace(f'"{old_name}"', f'"{name}"'))
    if file == "features.json":
      edit(content["featuresDict"]["features"])
    with open(new_path, "w") as f:
      json.dump(content, f)


class BadDataTest(parameterized.TestCase):

  def test_a_truncated_prepared_shard_is_named_with_how_to_prepare_again(self):
    data_dir = self.create_tempdir().full_path
    prepared = _prepared_dummy_mnist(data_dir)
    shards = [
        os.path.join(prepared, name) for name in os.listdir(prepared) if "train.tfrecord" in name
    ]
    self.assertTrue(shards)
    for shard in shards:
      with open(shard, "r+b") as f:
        f.truncate(os.path.getsize(shard) // 2)
    config = testutil.tiny_config(dataset__name="dummy_mnist",
                                  dataset__data_dir=data_dir,
                                  train__batch_size=2,
                                  train__steps_per_epoch=None)
    workdir = self.create_tempdir().full_path
    with self.assertRaisesRegex(
        UserError, r"dummy_mnist' dataset in .* is damaged"
        r".*python -m launch.prepare_data --dataset=dummy_mnist"):
      training.train_and_evaluate(config, workdir)
    self.assertFalse(os.path.exists(os.path.join(workdir, ".lock")))

  @parameterized.parameters("fit", "custom_loop", "estimator")
  def test_labels_beyond_the_declared_classes_are_named_before_training_on_them(self, trainer):
    if trainer == "estimator" and not hasattr(tf, "estimator"):
      self.skipTest("tf.estimator exists only on the full lane (TF 2.15)")
    data_dir = self.create_tempdir().full_path

    def declare_five_classes(features):
      features["label"]["classLabel"]["numClasses"] = "5"  # the records hold 0..9

    _copy_with_features(_prepared_dummy_mnist(data_dir), data_dir, "relabeled_mnist",
                        declare_five_classes)
    proc = testutil.call_launcher("train", "--config=configs/base.py",
                                  "--config.dataset.name=relabeled_mnist",
                                  f"--config.dataset.data_dir={data_dir}",
                                  "--config.model.name=mlp", f"--config.trainer={trainer}",
                                  "--config.train.batch_size=4",
                                  f"--workdir={self.create_tempdir().full_path}")
    testutil.assert_user_error(self, proc, "'relabeled_mnist' has labels outside [0, 5)",
                               "declares 5 classes", "prepare it again")
    self.assertRegex(proc.stderr, r"found: [5-9]")

  def test_images_of_any_size_pass_while_labels_without_classes_are_refused(self):
    data_dir = self.create_tempdir().full_path
    prepared = _prepared_dummy_mnist(data_dir)

    def any_size(features):
      features["image"]["image"]["shape"]["dimensions"] = ["-1", "-1", "1"]

    def plain_integer_label(features):
      features["label"] = {
          "pythonClassName": "tensorflow_datasets.core.features."
                             "tensor_feature.Tensor",
          "tensor": {
              "shape": {},
              "dtype": "int64"
          }
      }

    _copy_with_features(prepared, data_dir, "any_size_mnist", any_size)
    _copy_with_features(prepared, data_dir, "unclassed_mnist", plain_integer_label)
    builder = preparation.get_builder("any_size_mnist", data_dir)
    self.assertEqual((None, None, 1), tuple(builder.info.features["image"].shape))
    with self.assertRaisesRegex(UserError, r"has a Tensor label; kmodels needs a ClassLabel"):
      preparation.get_builder("unclassed_mnist", data_dir)


class FullDiskTest(parameterized.TestCase):

  def _small_disk(self, size):
    """A tmpfs of `size` mounted on a temporary directory (needs root; else the test skips)."""
    mount_point = self.create_tempdir().full_path
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount_point],
                             capture_output=True,
                             check=False)
    if mounted.returncode:
      self.skipTest(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    self.addCleanup(subprocess.run, ["umount", mount_point], check=False)
    return mount_point

  # Room for the first epoch's checkpoints, not for the second's. A checkpoint is about
  # 3 MB (weights and Adam's two slots); the custom loop also keeps the best one.
  @parameterized.parameters(("fit", "4500k"), ("custom_loop", "7500k"))
  def test_a_full_disk_stops_with_a_message_and_the_checkpoints_so_far_resume(
      self, trainer, disk_size):
    workdir = os.path.join(self._small_disk(disk_size), "run")
    config = testutil.tiny_config(dataset__source="synthetic", train__epochs=2, trainer=trainer)
    with self.assertRaisesRegex(
        UserError, r"disk holding .*run is full.*run the same "
        r"command again to resume"):
      training.train_and_evaluate(config, workdir)
    self.assertFalse(os.path.exists(os.path.join(workdir, ".lock")))

    subprocess.run(["mount", "-o", "remount,size=64m", os.path.dirname(workdir)], check=True)
    with self.assertLogs(level="INFO") as logs:
      metrics = training.train_and_evaluate(config, workdir)
    self.assertEqual(testutil.resumed_step("\n".join(logs.output)), 2)
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2])


class WorkdirOfAnotherExperimentTest(absltest.TestCase):

  def test_another_experiment_is_refused_then_overwritten_on_request(self):
    workdir = self.create_tempdir().full_path
    training.train_and_evaluate(testutil.tiny_config(dataset__source="synthetic"), workdir)
    other = testutil.tiny_config(dataset__source="synthetic", model__name="mlp")
    with self.assertRaisesRegex(
        UserError, r"holds a run of another experiment "
        r"\(model.name: 'shallownet' -> 'mlp'\).*--overwrite"):
      training.train_and_evaluate(other, workdir)
    self.assertTrue(os.listdir(os.path.join(workdir, "checkpoints")))  # nothing touched
    self.assertFalse(os.path.exists(os.path.join(workdir, ".lock")))

    metrics = training.train_and_evaluate(other, workdir, overwrite=True)
    self.assertEqual(metrics["status"], "completed")
    self.assertEqual(
        testutil.read_json(os.path.join(workdir, "config.json"), {})["model"]["name"], "mlp")

  def test_a_run_that_saved_nothing_gives_way_to_the_corrected_command(self):
    workdir = self.create_tempdir().full_path
    mistyped = testutil.tiny_config(dataset__source="synthetic")
    mistyped.model.width = 3  # no such argument: refused when the model is built
    with self.assertRaisesRegex(UserError, "does not accept"):
      training.train_and_evaluate(mistyped, workdir)
    self.assertTrue(os.path.exists(os.path.join(workdir, "config.json")))  # recorded before
    metrics = training.train_and_evaluate(testutil.tiny_config(dataset__source="synthetic"),
                                          workdir)
    self.assertEqual(metrics["status"], "completed")
    self.assertNotIn("width", testutil.read_json(os.path.join(workdir, "config.json"), {})["model"])

  def test_more_epochs_continue_the_same_experiment(self):
    workdir = self.create_tempdir().full_path
    training.train_and_evaluate(testutil.tiny_config(dataset__source="synthetic"), workdir)
    metrics = training.train_and_evaluate(
        testutil.tiny_config(dataset__source="synthetic", train__epochs=2), workdir)
    self.assertEqual([h["epoch"] for h in metrics["history"]], [1, 2])


if __name__ == "__main__":
  absltest.main()
