"""gs:// for real: launchers against a GCS JSON API server (fake-gcs-server) on localhost.

The server runs in memory on a free loopback port for this module. Launchers reach it the
way a user developing a cloud job would: STORAGE_EMULATOR_HOST in their environment, and
kmodels routes TensorFlow's own gs:// filesystem there. What landed in the bucket is read
through the server's HTTP API, never through kmodels or TensorFlow.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

from absl.testing import absltest
from absl.testing import parameterized

from tests import testutil

_BUCKET = "bucket"
_SPE = 48  # steps per epoch (a multiple of steps_per_execution)
# As in faults_test: short epochs, several steps per call, deterministic ops,
# so a run broken and resumed must end with the weights of an unbroken one.
_RUN_FLAGS = ("--config=configs/base.py", "--config.dataset.source=synthetic",
              "--config.dataset.synthetic_train_examples=512",
              "--config.dataset.synthetic_eval_examples=64", "--config.train.batch_size=16",
              f"--config.train.steps_per_epoch={_SPE}", "--config.train.epochs=3",
              "--config.train.steps_per_execution=3", "--config.train.deterministic=True")
_QUICK_FLAGS = ("--config=configs/base.py", "--config.dataset.source=synthetic",
                "--config.model.name=mlp", "--config.train.batch_size=16",
                "--config.train.steps_per_epoch=3")
_OUTPUTS = {
    "config.json", "metrics.json", "history.json", "curves.png", "classification_report.txt",
    "confusion_matrix.png", "export", "tensorboard", "checkpoints"
}


def setUpModule():
  global _server, _saved_environ
  _server = testutil.GcsServer(buckets=(_BUCKET,))
  _saved_environ = dict(os.environ)
  os.environ.update(_server.env())  # for every launcher these tests start


def tearDownModule():
  os.environ.clear()
  os.environ.update(_saved_environ)
  _server.stop()


def _top_level(prefix):
  """Names directly under gs://bucket/prefix/, as the server lists them."""
  names = _server.objects(_BUCKET, prefix + "/")
  return {n[len(prefix) + 1:].split("/")[0] for n in names} - {""}


def _launch(url, *flags):
  return subprocess.Popen([sys.executable, "-m", "launch.train", *flags, f"--workdir={url}"],
                          cwd=testutil.REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=testutil.REPO_ROOT),
                          stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT,
                          text=True)


def _has_checkpoint(prefix):
  """Whether the latest-checkpoint state file of fit (chief/) or the custom loop is there."""
  names = _server.objects(_BUCKET, f"{prefix}/checkpoints/")
  return bool({f"{prefix}/checkpoints/chief/checkpoint", f"{prefix}/checkpoints/checkpoint"} &
              set(names))


def _wait_for_epochs(prefix, epochs, process, timeout=300):
  """Until `epochs` are in history.json and checkpointed (the checkpoint is written last)."""
  deadline = time.monotonic() + timeout
  while (len(_server.read_json(_BUCKET, f"{prefix}/history.json", [])) < epochs or
         not _has_checkpoint(prefix)):
    if process.poll() is not None or time.monotonic() > deadline:
      raise AssertionError(f"the run ended or stalled before epoch {epochs}:\n" +
                           process.communicate()[0][-3000:])
    time.sleep(0.1)


class TrainToBucketTest(parameterized.TestCase):

  def _assert_resumes_like_unbroken(self, trainer, prefix, how, unbroken_fingerprint):
    flags = (*_RUN_FLAGS, f"--config.trainer={trainer}")
    broken = _launch(f"gs://{_BUCKET}/{prefix}", *flags)
    _wait_for_epochs(prefix, 1, broken)
    broken.send_signal(how)  # at epoch 1's end or in epoch 2
    output = broken.communicate(timeout=300)[0]
    self.assertEqual(broken.returncode, 143 if how == signal.SIGTERM else -9, output[-3000:])
    epochs_before = len(_server.read_json(_BUCKET, f"{prefix}/history.json", []))
    resumed = testutil.call_launcher("train", *flags, f"--workdir=gs://{_BUCKET}/{prefix}")
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    self.assertIn("GCS emulator", resumed.stderr)
    if how == signal.SIGTERM:  # right after the step the stop checkpointed
      stopped = int(re.search(r"\((\d+) steps in all\)", output).group(1))
      self.assertEqual(testutil.resumed_step(resumed.stderr), stopped)
    else:  # after the newest epoch checkpoint: the last in history, or the one before
      self.assertIn(testutil.resumed_step(resumed.stderr),
                    {_SPE * epochs_before, _SPE * (epochs_before - 1)} - {0})
    self.assertAlmostEqual(testutil.weights_fingerprint(resumed.stderr),
                           unbroken_fingerprint,
                           delta=1e-6 * unbroken_fingerprint)
    history = _server.read_json(_BUCKET, f"{prefix}/history.json", [])
    self.assertEqual([h["epoch"] for h in history], [1, 2, 3])

  # One signal per trainer, one trainer per lane: each trainer's resume after either
  # signal is tested on local disk (faults_test, kill_resume_test); here what matters is
  # that both checkpoint layouts, and a SIGTERM's mid-epoch save, round-trip through a
  # bucket, and that each lane's TensorFlow reads and writes one (the suite's time: BUILD_NOTES).
  @parameterized.parameters(("fit", signal.SIGKILL) if testutil.HAS_ESTIMATOR else ("custom_loop",
                                                                                    signal.SIGTERM))
  def test_outputs_land_in_the_bucket_and_a_broken_run_resumes_from_it(self, trainer, how):
    unbroken = testutil.call_launcher("train", *_RUN_FLAGS, f"--config.trainer={trainer}",
                                      f"--workdir=gs://{_BUCKET}/{trainer}/unbroken")
    self.assertEqual(unbroken.returncode, 0, unbroken.stderr[-3000:])
    self.assertEqual(_top_level(f"{trainer}/unbroken"), _OUTPUTS)
    objects = _server.objects(_BUCKET, f"{trainer}/unbroken/")
    self.assertIn(f"{trainer}/unbroken/export/1/saved_model.pb", objects)
    self.assertIn(f"{trainer}/unbroken/export/1/assets.extra/tf_serving_warmup_requests", objects)
    self.assertTrue(any("/tensorboard/train/events.out.tfevents" in n for n in objects))
    metrics = json.loads(_server.read(_BUCKET, f"{trainer}/unbroken/metrics.json"))
    self.assertEqual(metrics["status"], "completed")
    self.assertTrue(_server.read(_BUCKET, f"{trainer}/unbroken/curves.png").startswith(b"\x89PNG"))
    self.assertFalse(os.path.exists(os.path.join(testutil.REPO_ROOT, "gs:")))
    self._assert_resumes_like_unbroken(trainer, f"{trainer}/broken", how,
                                       testutil.weights_fingerprint(unbroken.stderr))

  def test_a_local_workdir_copied_to_the_bucket_resumes_there(self):
    local = self.create_tempdir().full_path
    first = testutil.call_launcher("train", *_QUICK_FLAGS, f"--workdir={local}")
    self.assertEqual(first.returncode, 0, first.stderr[-3000:])
    for directory, _, files in os.walk(local):
      for name in files:
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
          _server.upload(_BUCKET, "copied/" + os.path.relpath(path, local), f.read())
    resumed = testutil.call_launcher("train", *_QUICK_FLAGS, "--config.train.epochs=2",
                                     f"--workdir=gs://{_BUCKET}/copied")
    self.assertEqual(resumed.returncode, 0, resumed.stderr[-3000:])
    self.assertIn("Resumed from the checkpoint of epoch 1", resumed.stderr)
    history = _server.read_json(_BUCKET, "copied/history.json", [])
    self.assertEqual([h["epoch"] for h in history], [1, 2])


class SharedBucketTest(absltest.TestCase):

  def test_two_workers_share_a_bucket_workdir_and_resume_after_a_kill(self):
    prefix = "multi"
    # Kept short: on 2 cores shared with another test module, a long job risked TF's
    # coordination-service heartbeat timeout (10 s) once in CI.
    args = [
        *_QUICK_FLAGS, f"--workdir=gs://{_BUCKET}/{prefix}", "--config.train.epochs=6",
        "--config.train.steps_per_epoch=4", "--config.train.deterministic=True",
        "--config.precision=float32"
    ]
    processes, logs, ports = testutil.start_workers(args)
    deadline = time.monotonic() + 300
    while len(_server.read_json(_BUCKET, f"{prefix}/history.json", [])) < 2:
      self.assertIsNone(processes[0].poll(), testutil.read_text(logs[0])[-3000:])
      self.assertLess(time.monotonic(), deadline)
      time.sleep(0.2)
    processes[1].send_signal(signal.SIGKILL)
    processes[0].wait(300)
    processes[1].wait()
    processes, logs, _ = testutil.start_workers(args, ports=ports)
    codes = [p.wait(300) for p in processes]
    chief_log = testutil.read_text(logs[0])
    self.assertEqual(codes, [0, 0], chief_log[-3000:] + testutil.read_text(logs[1])[-3000:])
    self.assertRegex(chief_log, r"Resumed from the checkpoint of epoch [1-5]\b")
    history = _server.read_json(_BUCKET, f"{prefix}/history.json", [])
    self.assertEqual([h["epoch"] for h in history], list(range(1, 7)))
    self.assertEqual(_top_level(prefix), _OUTPUTS)  # the chief's outputs, nothing else
    stray = [n for n in _server.objects(_BUCKET) if "workertemp" in n or "kmodels-worker" in n]
    self.assertEqual(stray, [])


class BucketToolsTest(absltest.TestCase):

  def test_prepare_data_into_the_bucket_then_train_from_it(self):
    archive_dir = self.create_tempdir().full_path
    testutil.write_cifar10_archive(os.path.join(archive_dir, "cifar-10-binary.tar.gz"))
    data_dir = f"gs://{_BUCKET}/tfds"
    proc = testutil.call_launcher("prepare_data", "--dataset=cifar10",
                                  f"--archive_dir={archive_dir}", f"--data_dir={data_dir}")
    if testutil.TFDS_VERIFIES_ARCHIVES:
      testutil.assert_user_error(self, proc, testutil.CHECKSUM_MESSAGE)
      self.skipTest("this tfds rejects test-made archives; the full lane prepares into "
                    "the bucket")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertTrue(
        any(
            n.startswith("tfds/cifar10/") and ".tfrecord" in n
            for n in _server.objects(_BUCKET, "tfds/")))
    proc = testutil.call_launcher("train", "--config=configs/cifar_shallownet.py",
                                  f"--workdir=gs://{_BUCKET}/cifar",
                                  f"--config.dataset.data_dir={data_dir}",
                                  "--config.dataset.download=False", "--config.train.batch_size=4",
                                  "--config.train.epochs=1", "--config.train.steps_per_epoch=1")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    report = _server.read(_BUCKET, "cifar/classification_report.txt").decode()
    self.assertIn("airplane", report)
    self.assertRegex(report, r"accuracy\s+[\d.]+\s+6\n")

  def test_an_image_folder_in_the_bucket_trains_as_files_and_as_records(self):
    local = self.create_tempdir().full_path
    names = testutil.write_image_folder(local, per_class=12)
    for directory, _, files in os.walk(local):
      for name in files:
        path = os.path.join(directory, name)
        with open(path, "rb") as f:
          _server.upload(_BUCKET, "photos/" + os.path.relpath(path, local), f.read())
    _server.upload(_BUCKET, "photos/train/class_0/empty.jpg", b"")  # a bad file, remote
    folder_flags = ("--config=configs/base.py", "--config.dataset.name=image_folder",
                    "--config.dataset.image_size=16", "--config.dataset.max_bad_fraction=0.1",
                    "--config.model.name=mlp", "--config.train.batch_size=8",
                    "--config.train.epochs=1", "--config.train.steps_per_epoch=2")
    proc = testutil.call_launcher("train", *folder_flags,
                                  f"--config.dataset.image_dir=gs://{_BUCKET}/photos",
                                  f"--workdir=gs://{_BUCKET}/photos-run")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn(f"Skipping gs://{_BUCKET}/photos/train/class_0/empty.jpg: empty file",
                  proc.stderr)
    metrics = json.loads(_server.read(_BUCKET, "photos-run/metrics.json"))
    self.assertEqual({"train": 1, "eval": 0}, metrics["bad_files"])
    self.assertEqual(
        names,
        json.loads(_server.read(_BUCKET, "photos-run/export/1/model_card.json"))["label_names"])

    proc = testutil.call_launcher("prepare_data", "--dataset=image_folder",
                                  f"--image_dir=gs://{_BUCKET}/photos", "--max_bad_fraction=0.1",
                                  f"--data_dir=gs://{_BUCKET}/photo-records")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    index = json.loads(_server.read(_BUCKET, "photo-records/kmodels_records.json"))
    self.assertEqual({
        "examples": 36,
        "bad_files": 1
    }, {k: index["splits"]["train"][k] for k in ("examples", "bad_files")})
    self.assertIn("photo-records/train.tfrecord-00000-of-00001",
                  _server.objects(_BUCKET, "photo-records/"))
    proc = testutil.call_launcher("train", *folder_flags,
                                  f"--config.dataset.image_dir=gs://{_BUCKET}/photo-records",
                                  f"--workdir=gs://{_BUCKET}/records-run")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    report = _server.read(_BUCKET, "records-run/classification_report.txt").decode()
    self.assertRegex(report, r"accuracy\s+[\d.]+\s+12\n")  # the 12 test images

  def test_backbone_weights_load_from_the_bucket(self):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    local = os.path.join(self.create_tempdir().full_path, "mobilenet_v2_notop.h5")
    tf.keras.applications.MobileNetV2(include_top=False, weights=None,
                                      input_shape=(32, 32, 3)).save_weights(local)
    with open(local, "rb") as f:
      _server.upload(_BUCKET, "weights/mobilenet_v2_notop.h5", f.read())
    workdir = self.create_tempdir().full_path
    proc = subprocess.run([
        sys.executable, "-m", "launch.train", "--config=configs/base.py", f"--workdir={workdir}",
        "--config.dataset.source=synthetic", "--config.dataset.name=cifar10",
        "--config.model.name=mobilenet_v2",
        f"--config.model.weights=gs://{_BUCKET}/weights/mobilenet_v2_notop.h5",
        "--config.train.batch_size=8", "--config.train.steps_per_epoch=1"
    ],
                          cwd=testutil.REPO_ROOT,
                          env=dict(os.environ, PYTHONPATH=testutil.REPO_ROOT),
                          capture_output=True,
                          text=True,
                          timeout=600)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn(
        f"Loaded mobilenet_v2's backbone weights from gs://{_BUCKET}/weights/"
        "mobilenet_v2_notop.h5", proc.stderr)

  def test_compare_and_benchmark_write_to_the_bucket(self):
    proc = testutil.call_launcher("compare", "--config=configs/compare_fashion_mnist.py",
                                  f"--workdir=gs://{_BUCKET}/compare",
                                  "--config.dataset.source=synthetic",
                                  "--config.compare.paths=sequential",
                                  "--config.train.steps_per_epoch=2")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertEqual(
        _top_level("compare"),
        {"comparison.md", "comparison.csv", "comparison.png", "comparison.json", "sequential"})
    rows = json.loads(_server.read(_BUCKET, "compare/comparison.json"))
    self.assertEqual(rows[0]["status"], "ok")
    self.assertIn("compare/sequential/log.txt", _server.objects(_BUCKET, "compare/"))

    proc = testutil.call_launcher("benchmark", "--config=configs/base.py",
                                  f"--workdir=gs://{_BUCKET}/bench",
                                  "--config.dataset.source=synthetic", "--config.model.name=mlp",
                                  "--steps=2", "--pipeline_batches=2", "--reference=False")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    results = json.loads(_server.read(_BUCKET, "bench/benchmark.json"))
    self.assertGreater(results["train_images_per_second"], 0)

  def test_estimator_model_dir_in_the_bucket(self):
    proc = testutil.call_launcher("train", *_QUICK_FLAGS, "--config.trainer=estimator",
                                  "--config.estimator.hidden_units=(16,)",
                                  f"--workdir=gs://{_BUCKET}/estimator")
    if "needs tf.estimator" in proc.stderr:
      self.skipTest("tf.estimator exists on the full lane only")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    objects = _server.objects(_BUCKET, "estimator/")
    self.assertTrue(any(n.startswith("estimator/checkpoints/model.ckpt-") for n in objects))
    self.assertIn("estimator/export/1/saved_model.pb", objects)
    self.assertFalse([n for n in objects if "/incomplete-" in n])


class VertexAiTest(absltest.TestCase):

  def test_the_aip_directories_are_used_and_the_workdir_may_be_omitted(self):
    base = f"gs://{_BUCKET}/vertex_job"  # as Vertex sets them from baseOutputDirectory
    env = dict(os.environ,
               PYTHONPATH=testutil.REPO_ROOT,
               AIP_MODEL_DIR=f"{base}/model/",
               AIP_CHECKPOINT_DIR=f"{base}/checkpoints/",
               AIP_TENSORBOARD_LOG_DIR=f"{base}/logs/")
    proc = subprocess.run([sys.executable, "-m", "launch.train", *_QUICK_FLAGS],
                          cwd=testutil.REPO_ROOT,
                          env=env,
                          capture_output=True,
                          text=True,
                          timeout=600)
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    names = set(_server.objects(_BUCKET, "vertex_job/"))
    self.assertIn("vertex_job/model/saved_model.pb", names)  # at the model dir's root
    self.assertIn("vertex_job/model/model_card.json", names)
    self.assertTrue(any(n.startswith("vertex_job/checkpoints/chief/") for n in names), names)
    self.assertTrue(any(n.startswith("vertex_job/logs/") and ".tfevents." in n for n in names))
    self.assertIn("vertex_job/metrics.json", names)  # the workdir: the model dir's parent
    self.assertFalse({"export", "tensorboard"} & _top_level("vertex_job"))


class EmulatorRouteTest(absltest.TestCase):
  """What TensorFlow's gs:// filesystem does through kmodels' route to the emulator."""

  _RENAME = ("from kmodels import runtime, storage; from kmodels.storage import emulator; "
             "runtime.configure(); emulator.route_gs_to_emulator(); import sys; "
             "storage.rename(*sys.argv[1:])")

  def test_a_directory_renames_within_the_bucket(self):
    # TF 2.21 asks the bucket's storageLayout first; the emulator has no such endpoint.
    for name in ("saved_model.pb", "variables/variables.index"):
      _server.upload(_BUCKET, f"renamed/incomplete-1/{name}", name.encode())
    proc = subprocess.run([
        sys.executable, "-c", self._RENAME, f"gs://{_BUCKET}/renamed/incomplete-1",
        f"gs://{_BUCKET}/renamed/1"
    ],
                          cwd=testutil.REPO_ROOT,
                          capture_output=True,
                          text=True,
                          timeout=120,
                          env=dict(os.environ, PYTHONPATH=testutil.REPO_ROOT))
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertEqual(
        set(_server.objects(_BUCKET, "renamed/")) - {"renamed/1/"},
        {"renamed/1/saved_model.pb", "renamed/1/variables/variables.index"})
    self.assertEqual(_server.read(_BUCKET, "renamed/1/saved_model.pb"), b"saved_model.pb")


class BucketWorkdirTest(absltest.TestCase):

  def test_a_run_that_saved_nothing_gives_way_and_a_finished_one_is_kept(self):
    url, prefix = f"gs://{_BUCKET}/saved-nothing", "saved-nothing"
    # A model setting the model refuses fails after the config is recorded; it comes from
    # a user's own config file (an override cannot add a key).
    mistaken = self.create_tempfile(
        "mine.py", "from configs import base\ndef get_config():\n"
        "  config = base.get_config()\n  config.model.filters = (8, 16)\n"
        "  return config\n").full_path
    proc = testutil.call_launcher("train", f"--config={mistaken}", *_QUICK_FLAGS[1:],
                                  f"--workdir={url}")
    testutil.assert_user_error(self, proc, "does not accept these model.* settings ['filters']")
    self.assertEqual(_top_level(prefix), {"config.json"})

    proc = testutil.call_launcher("train", *_QUICK_FLAGS, "--config.train.epochs=1",
                                  f"--workdir={url}")
    self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
    self.assertIn("holds the config of a run that saved nothing", proc.stderr)
    model = _server.read_json(_BUCKET, f"{prefix}/config.json", {})["model"]
    self.assertEqual((model["name"], "filters" in model), ("mlp", False))

    proc = testutil.call_launcher("train", *_QUICK_FLAGS, "--config.train.epochs=1",
                                  "--config.model.name=shallownet", f"--workdir={url}")
    testutil.assert_user_error(self, proc, "holds a run of another experiment")
    self.assertEqual(
        _server.read_json(_BUCKET, f"{prefix}/config.json", {})["model"]["name"], "mlp")
    self.assertIn("metrics.json", _top_level(prefix))


class UnusableStorageTest(absltest.TestCase):

  def test_a_missing_bucket_is_one_message(self):
    # A real process: the exit status a shell sees. Other runs of this module that are not
    # signalled go in this process (testutil.call_launcher), through the same route.
    proc = testutil.run_launcher("train", *_QUICK_FLAGS, "--workdir=gs://no-such-bucket/run")
    testutil.assert_user_error(self, proc, "gs://no-such-bucket", "does not exist")

  def test_storage_that_does_not_answer_ends_within_a_minute(self):
    start = time.monotonic()
    dead = f"http://127.0.0.1:{testutil.free_ports(1)[0]}"  # nobody listens there
    proc = testutil.run_launcher("train",
                                 *_QUICK_FLAGS,
                                 f"--workdir=gs://{_BUCKET}/x",
                                 env={"STORAGE_EMULATOR_HOST": dead},
                                 timeout=120)
    testutil.assert_user_error(self, proc, f"gs://{_BUCKET}/x", "unreachable",
                               "is the emulator running there?")
    self.assertLess(time.monotonic() - start, 60)

  def test_a_live_lock_object_refuses_the_second_run(self):
    owner = {
        "pid": os.getpid(),
        "host": os.uname().nodename,
        "started": "now",
        "heartbeat": time.time(),
        "token": "other-run"
    }
    _server.upload(_BUCKET, "locked/.lock", json.dumps(owner).encode())
    proc = testutil.call_launcher("train", *_QUICK_FLAGS, f"--workdir=gs://{_BUCKET}/locked")
    testutil.assert_user_error(self, proc, f"in use by another run (pid {os.getpid()}",
                               f"delete gs://{_BUCKET}/locked/.lock")
    self.assertEqual(json.loads(_server.read(_BUCKET, "locked/.lock"))["token"], "other-run")
    self.assertEqual(set(_server.objects(_BUCKET, "locked/")) - {"locked/"}, {"locked/.lock"})


if __name__ == "__main__":
  absltest.main()
