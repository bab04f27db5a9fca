"""The job specs in launch/cluster/, run as their cluster runs them, on localhost.

Each test reads a spec, starts one `launch.train` process per task with the environment
that cluster gives each task (TF_CONFIG with a `chief` task from the TFJob operator and
Vertex AI, Vertex's AIP_* directories, Slurm's SLURM_* variables for a job step), and acts
as the controller: a TFJob task that exits >= 128 is restarted, as `restartPolicy:
ExitCode` does, and one that exits 1-127 fails the job. The specs' arguments are kept;
only what the machine lacks is changed: a CPU-sized model and data instead of the GPU
config, a local workdir instead of gs://, the default all-reduce instead of NCCL.
"""

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time

from absl.testing import absltest
import yaml

from tests import testutil

CLUSTER_DIR = os.path.join(testutil.REPO_ROOT, "launch", "cluster")
_TIMEOUT_SECONDS = 420
# Appended to each spec's arguments (a repeated override flag: the last wins): the spec's
# config made small, deterministic and CPU-bound.
_ON_THIS_MACHINE = (
    "--config.dataset.source=synthetic",
    "--config.dataset.name=mnist",
    "--config.dataset.synthetic_train_examples=256",
    "--config.dataset.augment.enabled=False",
    "--config.model.name=fastcnn",
    # No dropout: its random state is not checkpointed (BUILD_NOTES), and a
    # resumed job must end with the unbroken job's weights.
    "--config.model.dropout=0.0",
    "--config.train.batch_size=16",
    "--config.train.steps_per_epoch=4",
    "--config.train.steps_per_execution=1",
    "--config.train.deterministic=True",
    "--config.distribution.collective=auto",
    "--config.precision=float32")


def _load_yaml(name):
  with open(os.path.join(CLUSTER_DIR, name)) as f:
    return yaml.safe_load(f)


def _here(args, workdir=None, epochs=6):
  """A spec's arguments for this machine: its gs:// workdir local, _ON_THIS_MACHINE after."""
  args = [f"--workdir={workdir}" if a.startswith("--workdir=") else a for a in args]
  return [*args, *_ON_THIS_MACHINE, f"--config.train.epochs={epochs}"]


class _Task:
  """One task of a job: a launch.train process, restartable with the same environment."""

  def __init__(self, name, args, env, log_dir):
    self.name, self.args, self.env = name, args, env
    self.log = os.path.join(log_dir, f"{name}.log")
    self.process, self.exits = None, []

  def start(self):
    with open(self.log, "a") as log:
      self.process = subprocess.Popen([sys.executable, "-m", "launch.train", *self.args],
                                      cwd=testutil.REPO_ROOT,
                                      env=dict(os.environ,
                                               PYTHONPATH=testutil.REPO_ROOT,
                                               **self.env),
                                      stdout=log,
                                      stderr=subprocess.STDOUT)

  def exit_code(self):
    """None while running; else the status a container runtime reports (128 + signal)."""
    code = self.process.poll()
    return None if code is None else (128 - code if code < 0 else code)

  def text(self):
    return testutil.read_text(self.log)


def _run_job(tasks, restart_policy="ExitCode", while_running=None):
  """Starts `tasks` and acts as their controller until all exit 0; returns the tasks."""
  for task in tasks:
    task.start()
  deadline, hooked = time.monotonic() + _TIMEOUT_SECONDS, False
  while True:
    if while_running and not hooked:
      hooked = while_running(tasks)
    codes = [task.exit_code() for task in tasks]
    if all(code == 0 for code in codes):
      return tasks
    for task, code in zip(tasks, codes):
      if code in (None, 0):
        continue
      task.exits.append(code)
      if restart_policy != "ExitCode" or code < 128:
        for other in tasks:
          if other.exit_code() is None:
            other.process.kill()
        raise AssertionError(f"{task.name} exited {code}, a permanent failure:\n" +
                             task.text()[-3000:])
      task.start()  # what restartPolicy: ExitCode does with exit codes >= 128
    if time.monotonic() > deadline:
      for task in tasks:
        if task.exit_code() is None:
          task.process.kill()
      raise AssertionError("the job did not finish:\n" + tasks[0].text()[-3000:])
    time.sleep(0.2)


def _tf_config(cluster, task_type, index):
  return {
      "TF_CONFIG": json.dumps({
          "cluster": cluster,
          "task": {
              "type": task_type,
              "index": index
          }
      })
  }


def _tfjob_tasks(spec, workdir, log_dir, ports, epochs):
  """One task per replica of each tfReplicaSpec, with the operator's TF_CONFIG."""
  replicas = spec["spec"]["tfReplicaSpecs"]
  names = [
      (kind.lower(), i) for kind in ("Chief", "Worker") for i in range(replicas[kind]["replicas"])
  ]
  cluster = {}
  for (kind, _), port in zip(names, ports):
    cluster.setdefault(kind, []).append(f"localhost:{port}")
  tasks = []
  for kind, index in names:
    container = replicas[kind.capitalize()]["template"]["spec"]["containers"][0]
    tasks.append(
        _Task(f"{kind}{index}", _here(container["args"], workdir, epochs),
              _tf_config(cluster, kind, index), log_dir))
  return tasks


class TfJobTest(absltest.TestCase):

  def test_the_spec_asks_for_what_a_resumable_gpu_job_needs(self):
    spec = _load_yaml("tfjob.yaml")
    for kind, replica in spec["spec"]["tfReplicaSpecs"].items():
      pod = replica["template"]["spec"]
      self.assertEqual(replica["restartPolicy"], "ExitCode", kind)
      self.assertGreaterEqual(pod["terminationGracePeriodSeconds"], 60, kind)
      container = pod["containers"][0]
      self.assertGreater(container["resources"]["limits"]["nvidia.com/gpu"], 0)
      self.assertTrue(any(a.startswith("--workdir=gs://") for a in container["args"]))
    self.assertEqual(set(spec["spec"]["tfReplicaSpecs"]), {"Chief", "Worker"})

  def test_a_killed_worker_is_restarted_and_the_job_ends_with_the_unbroken_weights(self):
    spec = _load_yaml("tfjob.yaml")
    log_dir = tempfile.mkdtemp(prefix="kmodels-tfjob-")
    unbroken = _run_job(
        _tfjob_tasks(spec,
                     self.create_tempdir().full_path,
                     log_dir,
                     testutil.free_ports(2),
                     epochs=6))
    expected = testutil.weights_fingerprint(unbroken[0].text())

    workdir = self.create_tempdir().full_path
    history = os.path.join(workdir, "history.json")

    def kill_the_worker_after_two_epochs(tasks):
      if len(testutil.read_json(history, [])) < 2:
        return False
      tasks[1].process.send_signal(signal.SIGKILL)
      return True

    log_dir = tempfile.mkdtemp(prefix="kmodels-tfjob-")
    tasks = _run_job(_tfjob_tasks(spec, workdir, log_dir, testutil.free_ports(2), epochs=6),
                     while_running=kill_the_worker_after_two_epochs)
    chief, worker = tasks
    self.assertEqual(worker.exits[:1], [137])  # SIGKILL, restarted by the policy
    self.assertIn(129, chief.exits, chief.text()[-3000:])  # lost its peer: retryable
    self.assertIn("kmodels: error: this job lost a worker (", chief.text())
    # Equal up to the last bits of float32 sums (a 2e-10 relative difference was seen:
    # all-reduce order), far below what one step of training changes.
    self.assertAlmostEqual(testutil.weights_fingerprint(chief.text()),
                           expected,
                           delta=1e-8 * abs(expected))
    self.assertEqual([h["epoch"] for h in testutil.read_json(history, [])], list(range(1, 7)))


class VertexTest(absltest.TestCase):

  def test_worker_pools_train_with_a_chief_and_the_aip_directories(self):
    spec = _load_yaml("vertex_job.yaml")
    pools = spec["workerPoolSpecs"]
    self.assertEqual([p["replicaCount"] for p in pools], [1, 1])
    self.assertTrue(spec["baseOutputDirectory"]["outputUriPrefix"].startswith("gs://"))
    base = self.create_tempdir().full_path  # baseOutputDirectory, here a local directory
    aip = {
        "AIP_MODEL_DIR": f"{base}/model/",
        "AIP_CHECKPOINT_DIR": f"{base}/checkpoints/",
        "AIP_TENSORBOARD_LOG_DIR": f"{base}/logs/"
    }
    ports = testutil.free_ports(2)
    cluster = {"chief": [f"localhost:{ports[0]}"], "worker": [f"localhost:{ports[1]}"]}
    log_dir = tempfile.mkdtemp(prefix="kmodels-vertex-")
    tasks = [
        _Task(name, _here(pool["containerSpec"]["args"], epochs=2), {
            **aip,
            **_tf_config(cluster, kind, 0)
        }, log_dir)
        for name, kind, pool in (("chief", "chief", pools[0]), ("worker", "worker", pools[1]))
    ]
    self.assertFalse(any(a.startswith("--workdir") for t in tasks for a in t.args))
    chief, worker = _run_job(tasks)
    self.assertTrue(os.path.exists(os.path.join(base, "model", "saved_model.pb")))
    self.assertTrue(os.path.exists(os.path.join(base, "metrics.json")))
    self.assertTrue(os.listdir(os.path.join(base, "logs")))
    self.assertEqual(testutil.weights_fingerprint(chief.text()),
                     testutil.weights_fingerprint(worker.text()))
    self.assertIn("Test accuracy", chief.text())
    self.assertNotIn("Test accuracy", worker.text())  # the chief task reports


def _srun_args(path):
  """The arguments of the `srun python -m launch.train ...` line of an sbatch script."""
  with open(path) as f:
    script = f.read().replace("\\\n", " ")
  line = next(l for l in script.splitlines() if l.strip().startswith("srun "))
  words = shlex.split(line)
  return words[words.index("launch.train") + 1:]


def _consecutive_free_ports(count):
  """The first of `count` consecutive ports nobody listens on (Slurm: base + local task)."""
  for _ in range(50):
    first = testutil.free_ports(1)[0]
    sockets = [socket.socket() for _ in range(count)]
    try:
      for offset, s in enumerate(sockets):
        s.bind(("localhost", first + offset))
      return first
    except OSError:
      continue
    finally:
      for s in sockets:
        s.close()
  raise AssertionError("found no run of free ports")


class SlurmTest(absltest.TestCase):

  def test_one_task_per_node_trains_through_the_slurm_cluster_resolver(self):
    script = os.path.join(CLUSTER_DIR, "slurm.sbatch")
    with open(script) as f:
      self.assertRegex(f.read(), r"#SBATCH --ntasks-per-node=1")
    args = _srun_args(script)
    self.assertIn("--config.distribution.cluster=slurm", args)
    workdir, base_port = self.create_tempdir().full_path, _consecutive_free_ports(2)
    # What srun gives each task of a 2-task step; here both tasks are on one node.
    step = {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_ID": "0",
        "SLURM_NTASKS": "2",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_STEP_NODELIST": "localhost",
        "SLURM_NODELIST": "localhost",
        "SLURM_STEP_TASKS_PER_NODE": "2",
        "SLURM_TASKS_PER_NODE": "2"
    }
    log_dir = tempfile.mkdtemp(prefix="kmodels-slurm-")
    tasks = [
        _Task(
            f"task{rank}",
            [*_here(args, workdir, epochs=2), f"--config.distribution.slurm_port_base={base_port}"],
            {
                **step, "SLURM_PROCID": str(rank),
                "SLURM_LOCALID": str(rank)
            }, log_dir) for rank in range(2)
    ]
    chief, other = _run_job(tasks, restart_policy="Never")
    self.assertIn(
        "Slurm cluster: {'worker': ['localhost:%d', 'localhost:%d']}" % (base_port, base_port + 1),
        chief.text())
    self.assertIn("with 2 replica(s)", chief.text())
    self.assertEqual(testutil.weights_fingerprint(chief.text()),
                     testutil.weights_fingerprint(other.text()))
    self.assertEqual(
        testutil.read_json(os.path.join(workdir, "metrics.json"), {})["status"], "completed")


if __name__ == "__main__":
  absltest.main()
