"""dataset.service: training through a tf.data service dispatcher and two workers.

Real `launch.data_service` processes on localhost (one dispatcher, two workers) and a real
`launch.train` process that reads its batches from them. The workers' own TensorFlow logs
show that each ran the job's input pipeline.
"""

import os
import re
import subprocess
import sys
import time

from absl.testing import absltest

from tests import testutil

# Each worker logs every pipeline it is given at this TensorFlow log level.
_WORKER_LOGGING = {"TF_CPP_MIN_LOG_LEVEL": "0", "TF_CPP_VMODULE": "worker_impl=3"}
_RAN_A_TASK = "Created iterator for task"


class DataServiceTest(absltest.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.image_dir = os.path.join(absltest.get_default_test_tmpdir(), "folder")
    testutil.write_image_folder(cls.image_dir)
    dispatcher_port, *worker_ports = testutil.free_ports(3)
    cls.service = f"grpc://localhost:{dispatcher_port}"
    workers = [f"localhost:{port}" for port in worker_ports]
    cls.servers, cls.worker_logs = [], []
    cls._start("dispatcher", "--dispatcher", f"--port={dispatcher_port}",
               f"--worker_addresses={','.join(workers)}")
    for address, port in zip(workers, worker_ports):
      cls.worker_logs.append(
          cls._start(f"worker-{port}", "--worker", f"--port={port}",
                     f"--dispatcher_address=localhost:{dispatcher_port}",
                     f"--worker_address={address}"))
    for log in cls.worker_logs:
      cls._wait_for(log, "serving dispatcher")

  @classmethod
  def _start(cls, name, *args):
    log_path = os.path.join(absltest.get_default_test_tmpdir(), f"{name}.log")
    env = dict(os.environ, PYTHONPATH=testutil.REPO_ROOT, **_WORKER_LOGGING)
    with open(log_path, "w") as log:
      cls.servers.append(
          subprocess.Popen([sys.executable, "-m", "launch.data_service", *args],
                           cwd=testutil.REPO_ROOT,
                           env=env,
                           stdout=log,
                           stderr=subprocess.STDOUT))
    return log_path

  @classmethod
  def _wait_for(cls, log_path, text, timeout=120):
    deadline = time.monotonic() + timeout
    while text not in testutil.read_text(log_path):
      if time.monotonic() > deadline or any(p.poll() is not None for p in cls.servers):
        raise AssertionError(f"{log_path} never said {text!r}:\n"
                             f"{testutil.read_text(log_path)[-3000:]}")
      time.sleep(0.5)

  @classmethod
  def tearDownClass(cls):
    for server in cls.servers:
      server.kill()
      server.wait()
    super().tearDownClass()

  def test_a_job_trains_on_batches_the_two_workers_made(self):
    workdir = self.create_tempdir().full_path
    proc = testutil.run_launcher("train", *testutil.image_folder_flags(self.image_dir),
                                 "--config.model.name=mlp", "--config.train.batch_size=8",
                                 "--config.train.epochs=2", "--config.precision=float32",
                                 f"--config.dataset.service={self.service}",
                                 "--config.train.log_every_seconds=0.001", f"--workdir={workdir}")
    self.assertEqual(0, proc.returncode, proc.stderr[-3000:])
    self.assertIn(f"tf.data service workers of {self.service}", proc.stderr)
    history = testutil.read_json(os.path.join(workdir, "history.json"), [])
    self.assertEqual([1, 2], [record["epoch"] for record in history])
    # Progress through the service as without it: each epoch's lines end at its last step.
    steps = re.findall(r"Epoch (\d)/2, step (\d+)/(\d+):", proc.stderr)
    for epoch in ("1", "2"):
      last = [(int(done), int(total)) for e, done, total in steps if e == epoch][-1]
      self.assertEqual(last[0], last[1])
    metrics = testutil.read_json(os.path.join(workdir, "metrics.json"), {})
    self.assertIn("test_accuracy", metrics)
    for log in self.worker_logs:
      self.assertIn(_RAN_A_TASK, testutil.read_text(log), log)

  def test_an_address_that_is_not_grpc_host_port_is_refused_up_front(self):
    for service in ("localhost:5050", "grpc://localhost", "http://localhost:5050", "grpc://:5050",
                    "grpc://host:5050/path"):
      with self.subTest(service=service):
        proc = testutil.call_launcher("train", *testutil.image_folder_flags(self.image_dir),
                                      f"--config.dataset.service={service}",
                                      f"--workdir={self.create_tempdir().full_path}")
        testutil.assert_user_error(self, proc, "not a tf.data service dispatcher address",
                                   "grpc://HOST:PORT")

  def test_a_dispatcher_address_where_nothing_listens_is_exit_2_not_a_hang(self):
    closed_port = testutil.free_ports(1)[0]
    proc = testutil.call_launcher("train", *testutil.image_folder_flags(self.image_dir),
                                  "--config.model.name=mlp", "--config.train.batch_size=8",
                                  f"--config.dataset.service=grpc://localhost:{closed_port}",
                                  f"--workdir={self.create_tempdir().full_path}")
    testutil.assert_user_error(self, proc, "No tf.data service dispatcher answers at",
                               "launch.data_service --dispatcher")

  def test_a_data_service_launcher_without_its_partner_addresses_says_what_it_needs(self):
    # One real process (its exit status as a shell sees it), the other cases in-process.
    proc = testutil.run_launcher("data_service", "--dispatcher", "--port=1")
    testutil.assert_user_error(self, proc, "--worker_addresses")
    for args, needs in ((["--dispatcher", "--port=1"],
                         "--worker_addresses"), (["--worker", "--port=1"], "--dispatcher_address"),
                        (["--port=1"], "exactly one of --dispatcher and --worker"),
                        (["--worker", "--port=70000", "--dispatcher_address=localhost:1"],
                         "--port=70000: 70000 is not an integer in the range")):
      with self.subTest(args=args):
        testutil.assert_user_error(self, testutil.call_launcher("data_service", *args), needs)


if __name__ == "__main__":
  absltest.main()
