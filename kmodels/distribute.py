"""One place that turns `config.distribution` into a `tf.distribute.Strategy`.

Models, optimizers and metrics must be created inside `strategy.scope()`; the trainers
do that. `train.batch_size` is global: each replica gets batch_size / replicas.

Multi-worker jobs learn their cluster from the TF_CONFIG environment variable, the way
Kubernetes TFJob and Vertex AI custom jobs start workers. MultiWorkerMirroredStrategy must
be created before TensorFlow runs any op, which is why the launcher builds the strategy
first.
"""

import contextlib
import json
import os
import re
import shutil
import tempfile
import threading
import urllib.parse

from absl import logging
import ml_collections
import tensorflow as tf

from kmodels import netcheck
from kmodels.errors import UserError

COLLECTIVES = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}


def _default(distribution_config):
  del distribution_config
  return tf.distribute.get_strategy()


def _one_device(distribution_config):
  devices = parse_devices(distribution_config.devices) or ["/cpu:0"]
  if len(devices) != 1:
    raise UserError(f"distribution.strategy=one_device takes one device, got {devices}.")
  # A one-device MirroredStrategy, not OneDeviceStrategy: the same placement, and Keras'
  # BackupAndRestore (the fit trainer's resume) refuses OneDeviceStrategy outright
  # ("NotImplementedError: ... only supports ... MirroredStrategy").
  # With one device there is nothing to all-reduce: ReductionToOneDevice keeps it off the
  # collective ops, whose group keys clash with a two-device MirroredStrategy made earlier
  # in the same process ("joining a group with size 1, but that group has size 2").
  logging.info("one_device: MirroredStrategy over %s alone (resumable fit).", devices[0])
  return tf.distribute.MirroredStrategy(devices,
                                        cross_device_ops=tf.distribute.ReductionToOneDevice())


def _mirrored(distribution_config, for_estimator=False):
  # devices None: every visible GPU, or the CPU when there is none.
  devices = parse_devices(distribution_config.devices)
  count = len(devices) if devices else max(1, len(tf.config.list_logical_devices("GPU")))
  # Estimators hang in session.run with the default all-reduce over logical CPU devices;
  # ReductionToOneDevice trains. Over one device there is nothing to all-reduce, and
  # collective ops of group size 1 clashed with a two-device strategy made later in the
  # same process (found by tests/matrix_test.py).
  one_device_ops = for_estimator or count == 1
  return tf.distribute.MirroredStrategy(
      devices, cross_device_ops=tf.distribute.ReductionToOneDevice() if one_device_ops else None)


# Where a multi_worker job learns its cluster: TF_CONFIG (TFJob, Vertex AI, by hand) or the
# Slurm job step's SLURM_* variables; auto: TF_CONFIG when set, else Slurm inside a step.
CLUSTERS = ("auto", "tf_config", "slurm")


def in_slurm_step(environ=os.environ):
  return "SLURM_PROCID" in environ and "SLURM_STEP_NODELIST" in environ


def cluster_source(setting, environ=os.environ):
  """tf_config or slurm: what distribution.cluster means in this environment."""
  if setting != "auto":
    return setting
  return "slurm" if not environ.get("TF_CONFIG") and in_slurm_step(environ) else "tf_config"


def _slurm_resolver(distribution_config):
  if not in_slurm_step():
    raise UserError("distribution.cluster=slurm, but this process is not a Slurm job step "
                    "(no SLURM_PROCID / SLURM_STEP_NODELIST): start it with srun, e.g. "
                    "launch/cluster/slurm.sbatch.")
  tasks_per_node = slurm_tasks_per_node(os.environ)
  gpus = len(tf.config.list_physical_devices("GPU"))
  if gpus and tasks_per_node > 1:
    raise UserError(f"{tasks_per_node} Slurm tasks share a node: kmodels runs one task per "
                    "node (#SBATCH --ntasks-per-node=1), which uses all of the node's GPUs.")
  # TF's resolver lays out one port per task and hands each task GPUs; it lists no task
  # when a node has no GPUs, so CPU nodes get one notional slot per task. The devices
  # stay as they are (auto_set_gpu=False): TensorFlow has already seen them here.
  slots = max(gpus, 1)
  resolver = tf.distribute.cluster_resolver.SlurmClusterResolver(
      port_base=distribution_config.slurm_port_base,
      gpus_per_node=slots * tasks_per_node,
      gpus_per_task=slots,
      auto_set_gpu=False)
  logging.info("Slurm cluster: %s; this is task %s %s.",
               resolver.cluster_spec().as_dict(), resolver.task_type, resolver.task_id)
  return resolver


def slurm_tasks_per_node(environ):
  """The most tasks of this step on one node, with the step's variables checked: what
  srun sets, or a UserError naming the variable that is not."""

  def bad(name, what):
    return UserError(f"Slurm's {name}={environ.get(name)!r} is not {what}, as srun sets it; "
                     "start the task with srun (launch/cluster/slurm.sbatch).")

  counts = re.findall(r"(\d+)(?:\(x\d+\))?", environ.get("SLURM_STEP_TASKS_PER_NODE", ""))
  if not counts or not all(int(c) > 0 for c in counts):
    raise bad("SLURM_STEP_TASKS_PER_NODE", "a list of task counts such as '2(x3),1'")
  step_tasks = environ.get("SLURM_STEP_NUM_TASKS") or environ.get("SLURM_NTASKS")
  if step_tasks is not None and not (step_tasks.isdigit() and int(step_tasks) > 0):
    raise bad("SLURM_STEP_NUM_TASKS", "a positive number of tasks")
  rank = environ.get("SLURM_PROCID", "")
  if not rank.isdigit() or (step_tasks and int(rank) >= int(step_tasks)):
    raise bad("SLURM_PROCID", f"this task's rank, 0 to {int(step_tasks or 1) - 1}")
  return max(int(c) for c in counts)


def _multi_worker(distribution_config):
  options = tf.distribute.experimental.CommunicationOptions(
      implementation=COLLECTIVES[distribution_config.collective])
  if cluster_source(distribution_config.cluster) == "slurm":
    return tf.distribute.MultiWorkerMirroredStrategy(
        cluster_resolver=_slurm_resolver(distribution_config), communication_options=options)
  if read_tf_config() is None:
    logging.warning("TF_CONFIG is not set: multi_worker runs as a single worker.")
  return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def _tpu(distribution_config):
  target = distribution_config.tpu
  if not target:
    raise UserError("distribution.strategy=tpu needs distribution.tpu: 'local' on a Cloud "
                    "TPU VM, the TPU's name, or its address grpc://HOST:PORT.")
  _check_tpu_address(target, distribution_config.connect_timeout_seconds)
  what = f"TPUClusterResolver(tpu={target!r}), connect_to_cluster, initialize_tpu_system"
  try:
    resolver = _with_deadline(lambda: _connect_tpu(target),
                              distribution_config.connect_timeout_seconds, what)
  except UserError:
    raise
  except Exception as e:  # resolver/gRPC/TF errors all mean the same thing to a user here
    raise UserError(f"No TPU at distribution.tpu={target!r}: {type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''}\nTried: {what}. On a Cloud "
                    "TPU VM use --config.distribution.tpu=local; elsewhere give the TPU "
                    "name or grpc://HOST:8470, or pick another distribution.strategy.") from e
  return tf.distribute.TPUStrategy(resolver)


def _connect_tpu(target):
  resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=target)
  tf.config.experimental_connect_to_cluster(resolver)
  tf.tpu.experimental.initialize_tpu_system(resolver)
  return resolver


def _check_tpu_address(target, timeout_seconds):
  """Fails fast when a grpc:// address has nobody listening (gRPC would wait for minutes)."""
  if not target.startswith("grpc://"):
    return
  address = urllib.parse.urlparse(target)
  if not address.hostname or not address.port:
    raise UserError(f"distribution.tpu={target!r} is not an address; use grpc://HOST:PORT.")
  if not netcheck.reachable(address.hostname, address.port, min(timeout_seconds, 10)):
    raise UserError(f"Nothing answers at distribution.tpu={target!r} (tried a TCP connection "
                    "to it). Check the TPU's address and that it is running.")


def _with_deadline(fn, seconds, what):
  """Runs fn() in a helper thread and gives up after `seconds` (gRPC may never answer)."""
  outcome = {}

  def run():
    try:
      outcome["value"] = fn()
    except Exception as e:  # re-raised in the caller's thread
      outcome["error"] = e

  thread = threading.Thread(target=run, daemon=True, name="kmodels-connect")
  thread.start()
  thread.join(seconds)
  if thread.is_alive():
    raise UserError(f"No answer within {seconds} s from {what}. Check the address, or raise "
                    "--config.distribution.connect_timeout_seconds.")
  if "error" in outcome:
    raise outcome["error"]
  return outcome["value"]


# --------------------------------------------------------------------------- GPUs

GPU_MEMORY_GROWTH = ("auto", "on", "off")


def gpu_memory_growth_wanted(setting, tf_config):
  """distribution.gpu_memory_growth: on, off, or auto: on when another task of the
  TF_CONFIG cluster runs on this task's host (by default TensorFlow maps nearly all of a
  GPU's memory in the first process, and the next one on that GPU fails)."""
  if setting != "auto":
    return setting == "on"
  if not tf_config:
    return False
  task = tf_config["task"]
  host = tf_config["cluster"][task["type"]][task.get("index", 0)].rsplit(":", 1)[0]
  addresses = [a for members in tf_config["cluster"].values() for a in members]
  return sum(a.rsplit(":", 1)[0] == host for a in addresses) > 1


def describe_gpus(gpu_details, build_info):
  """One line: each GPU with its compute capability, and the CUDA/cuDNN TF was built with.

  gpu_details: [(name, {"device_name": ..., "compute_capability": (8, 0)}), ...].
  """
  built = (f"TensorFlow built with CUDA {build_info.get('cuda_version', '?')}, cuDNN "
           f"{build_info.get('cudnn_version', '?')}"
           if build_info.get("is_cuda_build") else "TensorFlow built without CUDA")
  if not gpu_details:
    return f"GPUs: none visible ({built})."
  listed = ", ".join(f"{name} ({details.get('device_name', '?')}, compute capability "
                     f"{'.'.join(map(str, details.get('compute_capability') or ('?',)))})"
                     for name, details in gpu_details)
  return f"GPUs: {listed} ({built})."


def no_gpu_reason(build_info, nvidia_device_present):
  """Why TensorFlow sees no GPU, as far as this machine tells."""
  if not build_info.get("is_cuda_build"):
    return ("this TensorFlow has no GPU support; install the GPU build: pip install "
            "'kmodels[gpu]' (tensorflow[and-cuda])")
  if nvidia_device_present:
    return ("an NVIDIA device is present but TensorFlow found no usable CUDA libraries; "
            "install them with pip install 'kmodels[gpu]' (tensorflow[and-cuda]), or check "
            "that the driver works (nvidia-smi)")
  return ("no NVIDIA GPU is visible to this process (no /dev/nvidia0; in a container, "
          "request a GPU, e.g. podman/docker --device or a Kubernetes nvidia.com/gpu limit)")


def _nvidia_device_present():
  return os.path.exists("/dev/nvidia0")


def configure_gpus(distribution_config):
  """Before TensorFlow starts its devices: memory growth, and the line describing the GPUs."""
  gpus = tf.config.list_physical_devices("GPU")
  setting = distribution_config.gpu_memory_growth
  if gpus and gpu_memory_growth_wanted(setting, read_tf_config()):
    try:
      for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
      logging.info("GPU memory growth on (distribution.gpu_memory_growth=%s).", setting)
    except RuntimeError as e:  # a second strategy in one process: GPUs already started
      logging.warning("GPU memory growth not set: %s", e)
  details = [(gpu.name, tf.config.experimental.get_device_details(gpu)) for gpu in gpus]
  logging.info(describe_gpus(details, tf.sysconfig.get_build_info()))


def choose_strategy(devices, tpu_configured, tpu_attached):
  """What `strategy: auto` means with these physical devices: (strategy name, why).

  A pure function of what it is given, so the GPU and TPU branches are testable here.
  """
  gpus = [d for d in devices if d.device_type == "GPU"]
  if tpu_configured:
    return "tpu", "distribution.tpu is set"
  if tpu_attached:
    return "tpu", "this machine has a TPU attached (/dev/accel*); using distribution.tpu=local"
  if len(gpus) >= 2:
    return "mirrored", f"{len(gpus)} GPUs: MirroredStrategy over all of them"
  what = "1 GPU" if gpus else "no GPU or TPU"
  return "default", f"{what}: the default strategy"


def _tpu_attached():
  """A Cloud TPU VM shows its chips as /dev/accel0, ... (and often sets TPU_NAME)."""
  return os.path.exists("/dev/accel0") or bool(os.environ.get("TPU_NAME"))


def _resolve_auto(distribution_config):
  devices = tf.config.list_physical_devices()
  name, reason = choose_strategy(devices, bool(distribution_config.tpu), _tpu_attached())
  logging.info("distribution.strategy=auto -> %s: %s. Devices found: %s.", name, reason,
               ", ".join(d.name for d in devices))
  if _nvidia_device_present() and not any(d.device_type == "GPU" for d in devices):
    logging.warning("distribution.strategy=auto fell back to the CPU: %s.",
                    no_gpu_reason(tf.sysconfig.get_build_info(), True))
  resolved = distribution_config.copy_and_resolve_references()
  resolved.strategy = name
  if name == "tpu" and not resolved.tpu:
    resolved.tpu = "local"
  return resolved


STRATEGIES = {
    "auto": _resolve_auto,  # resolved to one of the others by get_strategy
    "default": _default,
    "one_device": _one_device,
    "mirrored": _mirrored,
    "multi_worker": _multi_worker,
    "tpu": _tpu,
}


def read_tf_config():
  """The cluster description in TF_CONFIG, checked; None when TF_CONFIG is unset.

  Returns:
    The parsed dict: {"cluster": {"worker": ["host:port", ...], ...},
    "task": {"type": "worker", "index": 0}}.
  """
  raw = os.environ.get("TF_CONFIG", "").strip()
  if not raw:
    return None
  example = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
             '"task": {"type": "worker", "index": 0}}')
  try:
    tf_config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise UserError(f"TF_CONFIG is not valid JSON ({e}). It should look like: {example}") from e
  cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
  task = tf_config.get("task") if isinstance(tf_config, dict) else None
  if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
    raise UserError(f"TF_CONFIG needs a 'cluster' and a 'task' entry, got {raw!r}. It should "
                    f"look like: {example}")
  task_type, index = task.get("type"), task.get("index", 0)
  if task_type not in cluster:
    raise UserError(f"TF_CONFIG task type {task_type!r} is not in its cluster "
                    f"({', '.join(cluster)}).")
  members = cluster[task_type]
  if not isinstance(members, list) or not all(isinstance(m, str) and ":" in m for m in members):
    raise UserError(f"TF_CONFIG cluster[{task_type!r}] must be a list of 'host:port' strings, "
                    f"got {members!r}.")
  if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(members):
    raise UserError(f"TF_CONFIG task index {index!r} is out of range: cluster[{task_type!r}] "
                    f"has {len(members)} entries (indices 0..{len(members) - 1}).")
  return tf_config


def parse_devices(devices):
  """"cpu:0,gpu:1" -> ["/cpu:0", "/gpu:1"], each checked to exist; None or "" -> None."""
  if not devices:
    return None
  requested = ["/" + d.strip().lstrip("/") for d in devices.split(",") if d.strip()]
  available = {_device_key(d.name): d.name for d in tf.config.list_logical_devices()}
  missing = [d for d in requested if _device_key(d) not in available]
  if missing:
    why = ""
    if any(
        _device_key(d)[0] == "GPU" for d in missing) and "GPU" not in {key[0] for key in available}:
      why = " TensorFlow sees no GPU: " + no_gpu_reason(tf.sysconfig.get_build_info(),
                                                        _nvidia_device_present()) + "."
    raise UserError(f"distribution.devices {devices!r}: no device {', '.join(missing)} on "
                    f"this machine. Available: {', '.join(available.values())}.{why}")
  return requested


def _device_key(name):
  spec = tf.DeviceSpec.from_string(name)
  return (spec.device_type or "").upper(), spec.device_index


# Strategies with collective ops are made once per process and reused by later runs in
# it: a second MirroredStrategy over the same devices restarts TF's collective instance
# keys, and its first all-reduce then aborts on a shape mismatch with the first one's.
_REUSED = ("mirrored", "multi_worker")
_made = {}


def get_strategy(distribution_config: ml_collections.ConfigDict,
                 for_estimator: bool = False) -> tf.distribute.Strategy:
  """The strategy named by `distribution_config.strategy` (one per process and setting).

  for_estimator: a strategy for tf.estimator's RunConfig(train_distribute=...).
  """
  name = distribution_config.strategy
  if name not in STRATEGIES:
    raise UserError(f"Unknown distribution.strategy {name!r}. Choose one of: "
                    f"{', '.join(STRATEGIES)}.")
  configure_gpus(distribution_config)
  if name == "auto":
    distribution_config = _resolve_auto(distribution_config)
    name = distribution_config.strategy
  key = (name, distribution_config.devices, distribution_config.collective, for_estimator)
  if name in _REUSED and key in _made:
    return _made[key]
  try:
    if name == "mirrored":
      strategy = _mirrored(distribution_config, for_estimator)
    else:
      strategy = STRATEGIES[name](distribution_config)
  except (ValueError, RuntimeError) as e:
    raise UserError(f"Could not create the {name!r} strategy with devices "
                    f"{distribution_config.devices!r}: {e}") from e
  logging.info("TensorFlow %s. Strategy %s with %d replica(s) on %s.", tf.__version__,
               type(strategy).__name__, strategy.num_replicas_in_sync,
               ", ".join(replica_devices(strategy)))
  if name in _REUSED:
    _made[key] = strategy
  return strategy


def replica_devices(strategy):
  """The devices this worker's replicas run on."""
  try:
    return strategy.extended.worker_devices
  except RuntimeError:  # the default strategy: whatever TensorFlow places ops on
    return [d.name for d in tf.config.list_logical_devices()]


def is_chief(strategy):
  """Whether this process writes the run's outputs (the one chief of a multi-worker job)."""
  return strategy.extended.should_checkpoint


def is_multi_worker(strategy):
  return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


@contextlib.contextmanager
def writable_path(path, strategy):
  """Where this worker writes a save that every worker must take part in.

  The chief writes `path`. Other workers must still run the save (it may involve
  collective ops), so they write to a private temporary directory, removed afterwards.
  """
  if is_chief(strategy):
    yield path
    return
  scratch = tempfile.mkdtemp(prefix="kmodels-worker-")
  try:
    yield os.path.join(scratch, os.path.basename(path.rstrip("/")) or "out")
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def per_replica_batch_size(global_batch_size, strategy):
  """Splits the global batch evenly over replicas, or explains why it can't."""
  replicas = strategy.num_replicas_in_sync
  if global_batch_size % replicas:
    raise UserError(
        f"train.batch_size {global_batch_size} does not divide by the {replicas} replicas "
        f"of this strategy; use a multiple of {replicas}, e.g. "
        f"--config.train.batch_size={max(replicas, global_batch_size // replicas * replicas)}.")
  return global_batch_size // replicas
